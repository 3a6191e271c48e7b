export { UpstreamDispatcher } from './dispatcher.js'
export { isAliasPattern, type ModelProblem, ModelTable, type ResolvedRoute } from './models.js'
export { type ModelRoute, ModelRouteSchema, RetrySchema, type RouterOptions, RouterOptionsSchema, TimeoutsSchema } from './options.js'
export { type RouterDecorator, router } from './plugin.js'
