// A TGI upstream behind the gateway, as TGI writes its OpenAI-compatible chat route (the mock's `tgi` dialect): the
// usage record is what TGI reported, for each client API, streamed or not — never an estimate.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { type MockUpstream, promptTokensFor } from '@llmproxy/mock-upstream'
import { ask, behave, CLIENT_APIS, type ConvertGateway, startConvertGateway, upstreamBody } from './convert-helpers.js'

const MODEL = 'tgi-model'

let gw: ConvertGateway
before(async () => {
  gw = await startConvertGateway({ tgi: { protocol: 'tgi' } }, [{ name: MODEL, upstreams: ['tgi'] }], { retry: { attempts: 1 } })
})
after(() => gw.close())

test('TGI usage (the choices: [] chunk, the body) is recorded as reported, for every client API', async () => {
  const mock = gw.mocks.tgi as MockUpstream
  for (const client of CLIENT_APIS) {
    for (const stream of [true, false]) {
      const what = `${client} client, ${stream ? 'streamed' : 'not streamed'}`
      gw.reset()
      const answer = await ask(client, gw.url, MODEL, { stream, headers: behave({ dialect: 'tgi', tokens: 8 }) })
      assert.equal(answer.text.length > 0, true, what)
      const prompt = promptTokensFor(upstreamBody(mock))
      const record = await gw.record()
      assert.deepEqual(
        [record.promptTokens, record.completionTokens, record.totalTokens, record.estimated],
        [prompt, 8, prompt + 8, false],
        what,
      )
    }
  }
})
