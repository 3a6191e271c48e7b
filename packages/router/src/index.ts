export { UpstreamDispatcher } from './dispatcher.js'
export { isAliasPattern, type ModelProblem, ModelTable, type ResolvedRoute } from './models.js'
export { type ModelRoute, ModelRouteSchema, RetrySchema, RouterOptionsSchema, TimeoutsSchema } from './options.js'
export { type RouterDecorator, type RouterOptions, router } from './plugin.js'
