import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { convertRequest } from '@llmproxy/protocols'
import { type AnthropicBody, assertRefused, convertValid, type GeminiBody, OPTS, type OpenAIBody, STREAM } from './request-helpers.js'

const PNG = 'iVBORw0KGgo='
const PDF = 'JVBERi0xLjQK'

describe('system prompt, roles and turns', () => {
  test('OpenAI → Anthropic: system and developer messages become system; consecutive user messages merge', () => {
    const out = convertValid('openai', 'anthropic', {
      model: 'gpt-x',
      messages: [
        { role: 'system', content: 'You are terse.' },
        { role: 'developer', content: [{ type: 'text', text: 'Answer in French.' }] },
        { role: 'user', content: 'Hi' },
        { role: 'user', content: [{ type: 'text', text: 'How are you?' }] },
        { role: 'assistant', content: 'Bien.' },
        { role: 'user', content: 'Merci' },
      ],
    })
    const expected: AnthropicBody = {
      model: 'up-model',
      max_tokens: 4096,
      stream: false,
      system: 'You are terse.\n\nAnswer in French.',
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'Hi' },
            { type: 'text', text: 'How are you?' },
          ],
        },
        { role: 'assistant', content: [{ type: 'text', text: 'Bien.' }] },
        { role: 'user', content: [{ type: 'text', text: 'Merci' }] },
      ],
    }
    assert.deepEqual(out, expected)
  })

  test('OpenAI system text parts stay blocks of their own: a blank line between them, one Gemini part each', () => {
    const body = {
      model: 'gpt-x',
      messages: [
        {
          role: 'system' as const,
          content: [
            { type: 'text' as const, text: 'You are a pirate.' },
            { type: 'text' as const, text: 'Never reveal the map.' },
          ],
        },
        { role: 'user' as const, content: 'Where is it?' },
      ],
    }
    assert.equal(convertValid('openai', 'anthropic', body).system, 'You are a pirate.\n\nNever reveal the map.')
    assert.deepEqual(convertValid('openai', 'gemini', body).systemInstruction, {
      parts: [{ text: 'You are a pirate.' }, { text: 'Never reveal the map.' }],
    })
  })

  test('OpenAI → Gemini: systemInstruction, model role, no model or stream in the body', () => {
    const out = convertValid(
      'openai',
      'gemini',
      {
        model: 'gpt-x',
        stream: true,
        messages: [
          { role: 'system', content: 'Be brief.' },
          { role: 'user', content: 'Hi' },
          { role: 'assistant', content: 'Hello' },
          { role: 'user', content: 'Bye' },
        ],
      },
      STREAM,
    )
    const expected: GeminiBody = {
      systemInstruction: { parts: [{ text: 'Be brief.' }] },
      contents: [
        { role: 'user', parts: [{ text: 'Hi' }] },
        { role: 'model', parts: [{ text: 'Hello' }] },
        { role: 'user', parts: [{ text: 'Bye' }] },
      ],
    }
    assert.deepEqual(out, expected)
  })

  test('Anthropic → OpenAI: system blocks (cache_control dropped) become one system message; stream asks for usage', () => {
    const out = convertValid(
      'anthropic',
      'openai',
      {
        model: 'claude-x',
        max_tokens: 100,
        stream: true,
        system: [
          { type: 'text', text: "You are Claude Code, Anthropic's official CLI for Claude." },
          { type: 'text', text: 'Be careful.', cache_control: { type: 'ephemeral' } },
        ],
        messages: [
          { role: 'user', content: [{ type: 'text', text: 'Hi', cache_control: { type: 'ephemeral' } }] },
          {
            role: 'assistant',
            content: [
              { type: 'text', text: 'Hello. ' },
              { type: 'text', text: 'How can I help?' },
            ],
          },
          { role: 'user', content: 'Fix it' },
        ],
      },
      STREAM,
    )
    const expected: OpenAIBody = {
      model: 'up-model',
      stream: true,
      stream_options: { include_usage: true },
      max_completion_tokens: 100,
      messages: [
        { role: 'system', content: "You are Claude Code, Anthropic's official CLI for Claude.\n\nBe careful." },
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Hello. How can I help?' },
        { role: 'user', content: 'Fix it' },
      ],
    }
    assert.deepEqual(out, expected)
  })

  test('Anthropic → Gemini: roles, and the stream flag stays out of the body', () => {
    const out = convertValid(
      'anthropic',
      'gemini',
      {
        model: 'claude-x',
        max_tokens: 50,
        stream: true,
        system: 'Sys',
        messages: [
          { role: 'user', content: 'A' },
          { role: 'assistant', content: 'B' },
          { role: 'user', content: 'C' },
        ],
      },
      STREAM,
    )
    const expected: GeminiBody = {
      systemInstruction: { parts: [{ text: 'Sys' }] },
      contents: [
        { role: 'user', parts: [{ text: 'A' }] },
        { role: 'model', parts: [{ text: 'B' }] },
        { role: 'user', parts: [{ text: 'C' }] },
      ],
      generationConfig: { maxOutputTokens: 50 },
    }
    assert.deepEqual(out, expected)
  })

  test('Gemini → OpenAI: snake_case fields, a content without role is the user', () => {
    const out = convertValid('gemini', 'openai', {
      system_instruction: { parts: [{ text: 'One.' }, { text: 'Two.' }] },
      contents: [{ parts: [{ text: 'Q' }] }, { role: 'model', parts: [{ text: 'A' }] }, { role: 'user', parts: [{ text: 'Q2' }] }],
      generation_config: { max_output_tokens: 20, stop_sequences: ['END'] },
    })
    const expected: OpenAIBody = {
      model: 'up-model',
      messages: [
        { role: 'system', content: 'One.\n\nTwo.' },
        { role: 'user', content: 'Q' },
        { role: 'assistant', content: 'A' },
        { role: 'user', content: 'Q2' },
      ],
      max_completion_tokens: 20,
      stop: ['END'],
    }
    assert.deepEqual(out, expected)
  })

  test('Gemini → Anthropic: consecutive user contents merge into one turn (Anthropic alternates)', () => {
    const out = convertValid('gemini', 'anthropic', {
      contents: [
        { role: 'user', parts: [{ text: 'part one' }] },
        { role: 'user', parts: [{ text: 'part two' }] },
        { role: 'model', parts: [{ text: 'ok' }] },
        { role: 'model', parts: [{ text: 'more' }] },
        { role: 'user', parts: [{ text: 'go' }] },
      ],
    })
    assert.deepEqual(out.messages, [
      {
        role: 'user',
        content: [
          { type: 'text', text: 'part one' },
          { type: 'text', text: 'part two' },
        ],
      },
      {
        role: 'assistant',
        content: [
          { type: 'text', text: 'ok' },
          { type: 'text', text: 'more' },
        ],
      },
      { role: 'user', content: [{ type: 'text', text: 'go' }] },
    ])
    assert.equal(out.max_tokens, 4096, 'the default cap when the client sent none')
  })

  test('a system message mid-conversation joins the system prompt (open models refuse one anywhere but first)', () => {
    const anthropic = {
      model: 'claude-x',
      max_tokens: 10,
      system: 'First.',
      messages: [
        { role: 'user', content: 'A' },
        { role: 'assistant', content: 'B' },
        { role: 'user', content: 'C' },
        { role: 'system', content: 'Now be formal.' },
      ],
    }
    const openai = convertValid('anthropic', 'openai', anthropic)
    assert.deepEqual(
      (openai.messages as { role: string; content: unknown }[]).map((message) => [message.role, message.content]),
      [
        ['system', 'First.\n\nNow be formal.'],
        ['user', 'A'],
        ['assistant', 'B'],
        ['user', 'C'],
      ],
    )
    const gemini = convertValid('anthropic', 'gemini', anthropic)
    assert.deepEqual(gemini.systemInstruction, { parts: [{ text: 'First.' }, { text: 'Now be formal.' }] })
    const fromOpenAI = convertValid('openai', 'anthropic', {
      model: 'x',
      messages: [
        { role: 'user', content: 'A' },
        { role: 'system', content: 'Late rule.' },
        { role: 'user', content: 'B' },
      ],
    })
    assert.equal(fromOpenAI.system, 'Late rule.')
    assert.deepEqual(fromOpenAI.messages, [
      {
        role: 'user',
        content: [
          { type: 'text', text: 'A' },
          { type: 'text', text: 'B' },
        ],
      },
    ])
  })

  test('Anthropic → OpenAI: consecutive assistant messages merge into one (text, then its tool calls), as the model wrote it', () => {
    const out = convertValid('anthropic', 'openai', {
      model: 'claude-x',
      max_tokens: 64,
      messages: [
        { role: 'user', content: 'Read the file.' },
        { role: 'assistant', content: [{ type: 'text', text: 'Reading.' }] },
        { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'read', input: { path: 'a.txt' } }] },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'hello' }] },
      ],
    })
    const messages = out.messages as { role: string }[]
    assert.deepEqual(
      messages.map((m) => m.role),
      ['user', 'assistant', 'tool'],
    )
    const assistant = messages[1] as unknown as { content: unknown; tool_calls: { id: string; function: { name: string } }[] }
    assert.equal(assistant.content, 'Reading.')
    assert.deepEqual(
      assistant.tool_calls.map((c) => [c.id, c.function.name]),
      [['toolu_1', 'read']],
    )
  })

  test('a trailing assistant turn (a client prefill) stays the final message', () => {
    const out = convertValid('anthropic', 'openai', {
      model: 'claude-haiku',
      max_tokens: 32,
      messages: [
        { role: 'user', content: [{ type: 'text', text: 'Title this' }] },
        { role: 'assistant', content: [{ type: 'text', text: '{' }] },
      ],
    })
    assert.deepEqual((out.messages as unknown[]).at(-1), { role: 'assistant', content: '{' })
  })

  test('a client prefill ending in whitespace reaches Anthropic trimmed (Claude refuses it); one of only whitespace is left out', () => {
    const ask = (prefill: unknown) => ({
      model: 'gpt-x',
      messages: [
        { role: 'user', content: 'List 3 fruits' },
        { role: 'assistant', content: prefill },
      ],
    })
    const last = (prefill: unknown) => (convertValid('openai', 'anthropic', ask(prefill)).messages as unknown[]).at(-1)
    assert.deepEqual(last('Sure, here they are: '), { role: 'assistant', content: [{ type: 'text', text: 'Sure, here they are:' }] })
    // Text parts are blocks of their own: the blank ones at the end go, the one before them is trimmed.
    assert.deepEqual(
      last([
        { type: 'text', text: 'Sure,\n' },
        { type: 'text', text: ' \n' },
      ]),
      {
        role: 'assistant',
        content: [{ type: 'text', text: 'Sure,' }],
      },
    )
    assert.deepEqual(last(' \n'), { role: 'user', content: [{ type: 'text', text: 'List 3 fruits' }] })
    const gemini = convertValid('gemini', 'anthropic', {
      contents: [
        { role: 'user', parts: [{ text: 'List 3 fruits' }] },
        { role: 'model', parts: [{ text: 'Sure:\n\n' }] },
      ],
    })
    assert.deepEqual((gemini.messages as unknown[]).at(-1), { role: 'assistant', content: [{ type: 'text', text: 'Sure:' }] })
  })
})

describe('images', () => {
  const dataUrl = `data:image/png;base64,${PNG}`
  const withImages = (urls: string[]) => ({
    model: 'gpt-x',
    messages: [
      { role: 'user', content: 'look' },
      { role: 'assistant', content: 'ok' },
      {
        role: 'user',
        content: [{ type: 'text', text: 'these' }, ...urls.map((url) => ({ type: 'image_url', image_url: { url, detail: 'high' } }))],
      },
    ],
  })

  test('OpenAI data: and https URLs → Anthropic base64 and url sources', () => {
    const out = convertValid('openai', 'anthropic', withImages([dataUrl, 'https://example.com/cat.jpg']))
    assert.deepEqual((out.messages as AnthropicBody['messages'])[2], {
      role: 'user',
      content: [
        { type: 'text', text: 'these' },
        { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG } },
        { type: 'image', source: { type: 'url', url: 'https://example.com/cat.jpg' } },
      ],
    })
  })

  test('OpenAI data: and https URLs → Gemini inlineData and fileData (media type from the extension)', () => {
    const out = convertValid('openai', 'gemini', withImages([dataUrl, 'https://example.com/cat.jpg?size=2']))
    assert.deepEqual((out.contents as GeminiBody['contents'])[2], {
      role: 'user',
      parts: [
        { text: 'these' },
        { inlineData: { mimeType: 'image/png', data: PNG } },
        { fileData: { mimeType: 'image/jpeg', fileUri: 'https://example.com/cat.jpg?size=2' } },
      ],
    })
  })

  test('data: URLs OpenAI accepts: image/jpg, upper case and parameters (RFC 2397) reach Anthropic and Gemini as the plain type', () => {
    const urls = [`data:image/jpg;base64,${PNG}`, `data:IMAGE/PNG;base64,${PNG}`, `data:image/png;name=cat.png;base64,${PNG}`]
    const anthropic = convertValid('openai', 'anthropic', withImages(urls))
    assert.deepEqual((anthropic.messages as AnthropicBody['messages'])[2]?.content, [
      { type: 'text', text: 'these' },
      ...['image/jpeg', 'image/png', 'image/png'].map((media_type) => ({
        type: 'image',
        source: { type: 'base64', media_type, data: PNG },
      })),
    ])
    const gemini = convertValid('openai', 'gemini', withImages(urls))
    assert.deepEqual((gemini.contents as GeminiBody['contents'])[2]?.parts, [
      { text: 'these' },
      ...['image/jpeg', 'image/png', 'image/png'].map((mimeType) => ({ inlineData: { mimeType, data: PNG } })),
    ])
    // A Gemini client's mimeType is read the same way.
    const fromGemini = convertValid('gemini', 'anthropic', {
      contents: [{ role: 'user', parts: [{ inlineData: { mimeType: 'image/JPG', data: PNG } }] }],
    })
    assert.deepEqual((fromGemini.messages as AnthropicBody['messages'])[0]?.content, [
      { type: 'image', source: { type: 'base64', media_type: 'image/jpeg', data: PNG } },
    ])
  })

  test('Gemini cannot fetch plain http URLs, nor guess the type of an extensionless one: refused, naming the part', () => {
    assertRefused('openai', 'gemini', withImages([dataUrl, 'http://example.com/cat.jpg']), 'messages[2].content[2].image_url', /https/)
    assertRefused('openai', 'gemini', withImages(['https://example.com/image?id=3']), 'messages[2].content[1].image_url', /media type/)
  })

  test('Anthropic base64 and url images → OpenAI image_url parts', () => {
    const out = convertValid('anthropic', 'openai', {
      model: 'c',
      max_tokens: 5,
      messages: [
        {
          role: 'user',
          content: [
            { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG }, cache_control: { type: 'ephemeral' } },
            { type: 'image', source: { type: 'url', url: 'https://example.com/a.webp' } },
            { type: 'text', text: 'compare' },
          ],
        },
      ],
    })
    const expected: OpenAIBody['messages'] = [
      {
        role: 'user',
        content: [
          { type: 'image_url', image_url: { url: dataUrl } },
          { type: 'image_url', image_url: { url: 'https://example.com/a.webp' } },
          { type: 'text', text: 'compare' },
        ],
      },
    ]
    assert.deepEqual(out.messages, expected)
  })

  test('Gemini inlineData and public fileData → Anthropic; files kept by Google are refused', () => {
    const out = convertValid('gemini', 'anthropic', {
      contents: [
        {
          role: 'user',
          parts: [
            { text: 'see' },
            { inline_data: { mime_type: 'image/jpeg', data: PNG } },
            { fileData: { mimeType: 'image/png', fileUri: 'https://cdn.example.com/x' } },
          ],
        },
      ],
    })
    assert.deepEqual(out.messages, [
      {
        role: 'user',
        content: [
          { type: 'text', text: 'see' },
          { type: 'image', source: { type: 'base64', media_type: 'image/jpeg', data: PNG } },
          { type: 'image', source: { type: 'url', url: 'https://cdn.example.com/x' } },
        ],
      },
    ])
    assertRefused(
      'gemini',
      'openai',
      {
        contents: [
          { parts: [{ fileData: { mimeType: 'image/png', fileUri: 'https://generativelanguage.googleapis.com/v1beta/files/abc' } }] },
        ],
      },
      'contents[0].parts[0].fileData',
    )
  })

  test('an image type Anthropic does not take is refused with its path', () => {
    assertRefused(
      'gemini',
      'anthropic',
      { contents: [{ parts: [{ inlineData: { mimeType: 'image/heic', data: PNG } }] }] },
      'contents[0].parts[0].inlineData',
      /heic/,
    )
  })
})

describe('documents and audio', () => {
  const anthropicDocs = {
    model: 'c',
    max_tokens: 5,
    messages: [
      {
        role: 'user',
        content: [
          { type: 'document', source: { type: 'base64', media_type: 'application/pdf', data: PDF }, title: 'spec.pdf' },
          { type: 'document', source: { type: 'text', media_type: 'text/plain', data: 'plain words' }, title: 'notes' },
          { type: 'text', text: 'summarise' },
        ],
      },
    ],
  }

  test('Anthropic PDF and text documents → OpenAI file part and text', () => {
    const out = convertValid('anthropic', 'openai', anthropicDocs)
    const expected: OpenAIBody['messages'] = [
      {
        role: 'user',
        content: [
          { type: 'file', file: { file_data: `data:application/pdf;base64,${PDF}`, filename: 'spec.pdf' } },
          { type: 'text', text: 'notes\n\nplain words' },
          { type: 'text', text: 'summarise' },
        ],
      },
    ]
    assert.deepEqual(out.messages, expected)
  })

  test('an Anthropic document made of blocks keeps its title, before its blocks', () => {
    const out = convertValid('anthropic', 'openai', {
      model: 'c',
      max_tokens: 5,
      messages: [
        {
          role: 'user',
          content: [{ type: 'document', title: 'Runbook', source: { type: 'content', content: [{ type: 'text', text: 'Step one.' }] } }],
        },
      ],
    })
    const first = (out.messages as { content: unknown }[])[0]?.content
    assert.ok(JSON.stringify(first).indexOf('Runbook') < JSON.stringify(first).indexOf('Step one.'), JSON.stringify(first))
    assert.match(JSON.stringify(first), /Runbook/)
  })

  test('an OpenAI file of bare base64 named .txt is a text document for Anthropic, not a PDF', () => {
    const out = convertValid('openai', 'anthropic', {
      model: 'x',
      messages: [
        {
          role: 'user',
          content: [{ type: 'file', file: { file_data: Buffer.from('line one').toString('base64'), filename: 'n.txt' } }],
        },
      ],
    })
    const blocks = (out.messages as { content: { type: string; source: unknown; title?: string }[] }[])[0]?.content
    assert.deepEqual(blocks?.[0]?.source, { type: 'text', media_type: 'text/plain', data: 'line one' })
  })

  test('Anthropic documents → Gemini inline PDF and text; a PDF by URL → fileData', () => {
    const out = convertValid('anthropic', 'gemini', anthropicDocs)
    assert.deepEqual((out.contents as GeminiBody['contents'])[0]?.parts, [
      { inlineData: { mimeType: 'application/pdf', data: PDF } },
      { text: 'notes\n\nplain words' },
      { text: 'summarise' },
    ])
    const byUrl = convertValid('anthropic', 'gemini', {
      model: 'c',
      max_tokens: 5,
      messages: [{ role: 'user', content: [{ type: 'document', source: { type: 'url', url: 'https://example.com/doc' } }] }],
    })
    assert.deepEqual((byUrl.contents as GeminiBody['contents'])[0]?.parts, [
      { fileData: { mimeType: 'application/pdf', fileUri: 'https://example.com/doc' } },
    ])
  })

  test('a PDF by URL cannot go to an OpenAI-compatible upstream', () => {
    assertRefused(
      'anthropic',
      'openai',
      {
        model: 'c',
        max_tokens: 5,
        messages: [
          {
            role: 'user',
            content: [
              { type: 'text', text: 'x' },
              { type: 'document', source: { type: 'url', url: 'https://e.com/a.pdf' } },
            ],
          },
        ],
      },
      'messages[0].content[1]',
    )
  })

  test('OpenAI file parts → Anthropic documents; file ids are refused', () => {
    const out = convertValid('openai', 'anthropic', {
      model: 'x',
      messages: [
        { role: 'user', content: [{ type: 'file', file: { file_data: `data:application/pdf;base64,${PDF}`, filename: 'a.pdf' } }] },
      ],
    })
    assert.deepEqual(out.messages, [
      {
        role: 'user',
        content: [{ type: 'document', source: { type: 'base64', media_type: 'application/pdf', data: PDF }, title: 'a.pdf' }],
      },
    ])
    assertRefused(
      'openai',
      'anthropic',
      { model: 'x', messages: [{ role: 'user', content: [{ type: 'file', file: { file_id: 'file-1' } }] }] },
      'messages[0].content[0].file.file_id',
    )
  })

  test('audio: OpenAI input_audio ⇄ Gemini inlineData; Anthropic takes none', () => {
    const openai = {
      model: 'x',
      messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: { data: 'UklGRg==', format: 'wav' } }] }],
    }
    const gemini = convertValid('openai', 'gemini', openai)
    assert.deepEqual((gemini.contents as GeminiBody['contents'])[0]?.parts, [{ inlineData: { mimeType: 'audio/wav', data: 'UklGRg==' } }])
    const back = convertValid('gemini', 'openai', gemini)
    assert.deepEqual((back.messages as unknown[])[0], {
      role: 'user',
      content: [{ type: 'input_audio', input_audio: { data: 'UklGRg==', format: 'wav' } }],
    })
    assertRefused('openai', 'anthropic', openai, 'messages[0].content[0].input_audio', /audio/)
  })
})

describe('model and stream', () => {
  test('OpenAI and Anthropic bodies name the upstream model; Gemini bodies name none', () => {
    const body = { model: 'client-name', messages: [{ role: 'user', content: 'x' }] }
    assert.equal(convertRequest('openai', 'anthropic', body, OPTS).model, 'up-model')
    assert.equal(convertRequest('anthropic', 'openai', { ...body, max_tokens: 1 }, OPTS).model, 'up-model')
    assert.equal('model' in convertRequest('openai', 'gemini', body, OPTS), false)
  })

  test('stream: Anthropic stream true; OpenAI stream and include_usage; nothing when not streaming', () => {
    const body = { model: 'm', messages: [{ role: 'user', content: 'x' }] }
    assert.equal(convertRequest('openai', 'anthropic', body, STREAM).stream, true)
    const openai = convertRequest('anthropic', 'openai', { ...body, max_tokens: 1 }, OPTS)
    assert.equal('stream' in openai || 'stream_options' in openai, false)
  })
})

describe('client values named in refusals', () => {
  // String() throws on an object with a toString key: a TypeError, not the 400 the client is owed.
  const odd = { toString: 1 }
  const user = { role: 'user', content: 'x' }
  const cases: [
    from: 'openai' | 'anthropic' | 'gemini',
    to: 'openai' | 'anthropic' | 'gemini',
    body: Record<string, unknown>,
    param: string,
  ][] = [
    ['anthropic', 'openai', { model: 'm', max_tokens: 1, messages: [{ role: odd, content: 'x' }] }, 'messages[0].role'],
    ['anthropic', 'openai', { model: 'm', max_tokens: 1, messages: [user], tools: [{ type: odd, name: 'f' }] }, 'tools[0]'],
    [
      'anthropic',
      'openai',
      { model: 'm', max_tokens: 1, messages: [{ role: 'user', content: [{ type: odd }] }] },
      'messages[0].content[0]',
    ],
    [
      'anthropic',
      'openai',
      { model: 'm', max_tokens: 1, messages: [{ role: 'user', content: [{ type: 'image', source: { type: odd } }] }] },
      'messages[0].content[0].source',
    ],
    [
      'anthropic',
      'openai',
      { model: 'm', max_tokens: 1, messages: [{ role: 'user', content: [{ type: 'document', source: { type: odd } }] }] },
      'messages[0].content[0].source',
    ],
    ['anthropic', 'openai', { model: 'm', max_tokens: 1, messages: [user], tool_choice: { type: odd } }, 'tool_choice'],
    ['anthropic', 'openai', { model: 'm', max_tokens: 1, messages: [user], thinking: { type: odd } }, 'thinking.type'],
    ['anthropic', 'openai', { model: 'm', max_tokens: 1, messages: [user], output_format: { type: odd } }, 'output_format.type'],
    ['gemini', 'openai', { contents: [{ role: odd, parts: [{ text: 'x' }] }] }, 'contents[0].role'],
    [
      'gemini',
      'openai',
      { contents: [{ parts: [{ text: 'x' }] }], generationConfig: { responseMimeType: odd } },
      'generationConfig.responseMimeType',
    ],
    ['openai', 'anthropic', { model: 'm', messages: [user], tools: [{ type: odd }] }, 'tools[0]'],
    ['openai', 'anthropic', { model: 'm', messages: [user], reasoning_effort: odd }, 'reasoning_effort'],
    ['openai', 'anthropic', { model: 'm', messages: [{ role: odd, content: 'x' }] }, 'messages[0].role'],
    ['openai', 'anthropic', { model: 'm', messages: [{ role: 'user', content: [{ type: odd }] }] }, 'messages[0].content[0]'],
    ['openai', 'anthropic', { model: 'm', messages: [user, { role: 'assistant', content: [{ type: odd }] }] }, 'messages[1].content[0]'],
    [
      'openai',
      'anthropic',
      { model: 'm', messages: [user, { role: 'assistant', tool_calls: [{ type: odd }] }] },
      'messages[1].tool_calls[0]',
    ],
    ['openai', 'anthropic', { model: 'm', messages: [user], tool_choice: { type: odd } }, 'tool_choice'],
    ['openai', 'anthropic', { model: 'm', messages: [user], response_format: { type: odd } }, 'response_format'],
  ]

  test('as JSON, whatever their shape ({"toString":1} included): the refusal is a ConversionError naming the field', () => {
    for (const [from, to, body, param] of cases) assertRefused(from, to, body, param, /\{"toString":1\}/)
  })

  test('cut to a few characters: a 100 KB role does not come back whole', () => {
    const role = 'r'.repeat(100_000)
    assertRefused('openai', 'anthropic', { model: 'm', messages: [{ role, content: 'x' }] }, 'messages[0].role', /… \(100000 characters\)/)
    assert.throws(
      () => convertRequest('openai', 'anthropic', { model: 'm', messages: [{ role, content: 'x' }] }, OPTS),
      (err: Error) => err.message.length < 300,
    )
  })
})
