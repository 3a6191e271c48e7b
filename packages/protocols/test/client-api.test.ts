import assert from 'node:assert/strict'
import { test } from 'node:test'
import { clientApiOf } from '../src/index.js'

test('clientApiOf: the client API from the route, with or without a prefix the app mounted the gateway under', () => {
  const cases: [string, Record<string, string>, string][] = [
    ['/v1/chat/completions', {}, 'openai'],
    ['/v1/messages', {}, 'anthropic'],
    ['/v1/messages/count_tokens', {}, 'anthropic'],
    ['/v1beta/models/gemini-pro:streamGenerateContent?alt=sse', {}, 'gemini'],
    ['/v1/models', {}, 'openai'],
    ['/v1/models', { 'anthropic-version': '2023-06-01' }, 'anthropic'],
    ['/v1/models/claude', { 'anthropic-version': '2023-06-01' }, 'anthropic'],
    // Under a prefix.
    ['/llm/v1/messages', {}, 'anthropic'],
    ['/llm/v1beta/models/m:generateContent', {}, 'gemini'],
    // Gemini's stable version: its generation routes only (the rest of /v1/models is OpenAI's and Anthropic's).
    ['/v1/models/gemini-2.5-flash:streamGenerateContent?alt=sse', {}, 'gemini'],
    ['/v1/models/gemini-2.5-flash', {}, 'openai'],
    ['/llm/v1/models', { 'anthropic-version': '2023-06-01' }, 'anthropic'],
    // Google's SDKs on the stable version's model list: by their key header; a client header alone is no sign of one.
    ['/v1/models', { 'x-goog-api-key': 'k' }, 'gemini'],
    ['/v1/models/gemini-2.5-flash', { 'x-goog-api-key': 'k', 'x-goog-api-client': 'google-genai-sdk/2.32.0' }, 'gemini'],
    ['/v1/models', { 'x-goog-api-client': 'gl-python/3.12' }, 'openai'],
    ['/v1/chat/completions', { 'x-goog-api-key': 'k' }, 'openai'],
    // Routes of theirs the gateway does not serve: their 404 in the client's shape.
    ['/v1/messages/batches', {}, 'anthropic'],
    ['/v1/messages/batches/msgbatch_1/results', {}, 'anthropic'],
    ['/v1/files', { 'anthropic-version': '2023-06-01' }, 'anthropic'],
    ['/v1beta/cachedContents', {}, 'gemini'],
    ['/upload/v1beta/files?uploadType=resumable', {}, 'gemini'],
    ['/v1/batches', { 'x-goog-api-key': 'k' }, 'gemini'],
    ['/v1/models/m:embedContent', { 'x-goog-api-key': 'k' }, 'gemini'],
    ['/v1/files', {}, 'openai'],
    ['/llm/v1/embeddings', { 'anthropic-version': '2023-06-01' }, 'openai'],
    ['/llm/v1/chat/completions', {}, 'openai'],
    // Not an Anthropic or Gemini route though the path holds their words.
    ['/v1beta/openai/chat/completions', {}, 'openai'],
    ['/v1/chat/completions?next=/v1/messages', {}, 'openai'],
    ['/v1/messages-archive/x', {}, 'openai'],
  ]
  for (const [url, headers, api] of cases) assert.equal(clientApiOf(url, headers), api, url)
})
