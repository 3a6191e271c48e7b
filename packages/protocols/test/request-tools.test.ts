import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { convertRequest, toolCallIdWithSignature } from '@llmproxy/protocols'
import { type AnthropicBody, assertRefused, convertValid, type GeminiBody, OPTS, type OpenAIBody } from './request-helpers.js'

const weather = {
  type: 'object' as const,
  properties: { city: { type: 'string', description: 'City name' }, unit: { type: 'string', enum: ['c', 'f'] } },
  required: ['city'],
  additionalProperties: false,
}

const openaiTools = {
  model: 'gpt-x',
  messages: [{ role: 'user', content: 'Weather in Paris?' }],
  tools: [
    { type: 'function', function: { name: 'get_weather', description: 'Current weather', parameters: weather, strict: true } },
    { type: 'function', function: { name: 'now' } },
  ],
}

describe('tool definitions and tool_choice', () => {
  test('OpenAI → Anthropic: input_schema, strict kept, a tool without parameters gets an empty object schema', () => {
    const out = convertValid('openai', 'anthropic', openaiTools)
    const expected: AnthropicBody['tools'] = [
      { name: 'get_weather', description: 'Current weather', input_schema: weather, strict: true },
      { name: 'now', input_schema: { type: 'object', properties: {} } },
    ]
    assert.deepEqual(out.tools, expected)
    assert.equal(out.tool_choice, undefined)
  })

  test('OpenAI tool_choice and parallel_tool_calls → Anthropic tool_choice', () => {
    const cases: [unknown, boolean | undefined, unknown][] = [
      ['auto', undefined, { type: 'auto' }],
      ['none', undefined, { type: 'none' }],
      ['required', undefined, { type: 'any' }],
      [{ type: 'function', function: { name: 'get_weather' } }, undefined, { type: 'tool', name: 'get_weather' }],
      ['required', false, { type: 'any', disable_parallel_tool_use: true }],
      [undefined, false, { type: 'auto', disable_parallel_tool_use: true }],
      [undefined, true, undefined],
    ]
    for (const [choice, parallel, expected] of cases) {
      const out = convertValid('openai', 'anthropic', { ...openaiTools, tool_choice: choice, parallel_tool_calls: parallel })
      assert.deepEqual(out.tool_choice, expected, JSON.stringify([choice, parallel]))
    }
  })

  test('OpenAI → Gemini: parametersJsonSchema, toolConfig modes, allowed_tools', () => {
    const out = convertValid('openai', 'gemini', { ...openaiTools, tool_choice: 'required' })
    const expected: GeminiBody['tools'] = [
      {
        functionDeclarations: [
          { name: 'get_weather', description: 'Current weather', parametersJsonSchema: weather },
          { name: 'now', parametersJsonSchema: { type: 'object', properties: {} } },
        ],
      },
    ]
    assert.deepEqual(out.tools, expected)
    assert.deepEqual(out.toolConfig, { functionCallingConfig: { mode: 'ANY' } })
    const cases: [unknown, unknown][] = [
      ['auto', { mode: 'AUTO' }],
      ['none', { mode: 'NONE' }],
      [
        { type: 'function', function: { name: 'now' } },
        { mode: 'ANY', allowedFunctionNames: ['now'] },
      ],
      [
        { type: 'allowed_tools', allowed_tools: { mode: 'required', tools: [{ type: 'function', function: { name: 'now' } }] } },
        { mode: 'ANY', allowedFunctionNames: ['now'] },
      ],
    ]
    for (const [choice, expectedConfig] of cases) {
      const converted = convertValid('openai', 'gemini', { ...openaiTools, tool_choice: choice })
      assert.deepEqual(converted.toolConfig, { functionCallingConfig: expectedConfig }, JSON.stringify(choice))
    }
    // An 'auto' subset is a shorter tool list (allowedFunctionNames only goes with ANY).
    const subset = convertValid('openai', 'gemini', {
      ...openaiTools,
      tool_choice: { type: 'allowed_tools', allowed_tools: { mode: 'auto', tools: [{ type: 'function', function: { name: 'now' } }] } },
    })
    assert.deepEqual(subset.tools, [{ functionDeclarations: [{ name: 'now', parametersJsonSchema: { type: 'object', properties: {} } }] }])
    assert.deepEqual(subset.toolConfig, { functionCallingConfig: { mode: 'AUTO' } })
  })

  test('Anthropic → OpenAI: tools, tool_choice any/tool/none, disable_parallel_tool_use → parallel_tool_calls false', () => {
    const body = {
      model: 'c',
      max_tokens: 10,
      messages: [{ role: 'user', content: 'go' }],
      tools: [{ name: 'Read', description: 'Read a file', input_schema: weather, cache_control: { type: 'ephemeral' } }],
    }
    const out = convertValid('anthropic', 'openai', { ...body, tool_choice: { type: 'any', disable_parallel_tool_use: true } })
    const expected: Partial<OpenAIBody> = {
      tools: [{ type: 'function', function: { name: 'Read', description: 'Read a file', parameters: weather } }],
      tool_choice: 'required',
      parallel_tool_calls: false,
    }
    assert.deepEqual({ tools: out.tools, tool_choice: out.tool_choice, parallel_tool_calls: out.parallel_tool_calls }, expected)
    assert.deepEqual(convertValid('anthropic', 'openai', { ...body, tool_choice: { type: 'tool', name: 'Read' } }).tool_choice, {
      type: 'function',
      function: { name: 'Read' },
    })
    assert.equal(convertValid('anthropic', 'openai', { ...body, tool_choice: { type: 'none' } }).tool_choice, 'none')
  })

  test("Anthropic's server tools have no equivalent: refused, naming the tool", () => {
    assertRefused(
      'anthropic',
      'openai',
      {
        model: 'c',
        max_tokens: 10,
        messages: [{ role: 'user', content: 'search' }],
        tools: [
          { name: 'Read', input_schema: weather },
          { type: 'web_search_20250305', name: 'web_search', max_uses: 5 },
        ],
      },
      'tools[1]',
      /web_search_20250305/,
    )
  })

  test('Anthropic tool search is dropped and its deferred tools sent as ordinary tools', () => {
    const out = convertValid('anthropic', 'openai', {
      model: 'c',
      max_tokens: 10,
      messages: [{ role: 'user', content: 'go' }],
      tools: [
        { type: 'tool_search_tool_regex_20251119', name: 'tool_search_tool_regex' },
        { name: 'mcp__db__query', description: 'Query', input_schema: weather, defer_loading: true },
      ],
    })
    assert.deepEqual(out.tools, [{ type: 'function', function: { name: 'mcp__db__query', description: 'Query', parameters: weather } }])
  })

  test('Gemini → OpenAI: OpenAPI-style parameters become JSON Schema; ANY with names; built-in tools refused', () => {
    const out = convertValid('gemini', 'openai', {
      contents: [{ role: 'user', parts: [{ text: 'x' }] }],
      tools: [
        {
          functionDeclarations: [
            {
              name: 'find',
              description: 'Find things',
              parameters: {
                type: 'OBJECT',
                properties: {
                  q: { type: 'STRING', nullable: true },
                  unit: { type: 'STRING', format: 'enum', enum: ['c', 'f'], nullable: true },
                  n: { type: 'INTEGER' },
                  tags: { type: 'ARRAY', items: { type: 'STRING' }, maxItems: '3' },
                },
                required: ['n'],
                propertyOrdering: ['q', 'n', 'tags'],
              },
            },
            { name: 'other', parametersJsonSchema: { type: 'object', properties: { a: { type: ['string', 'null'] } } } },
          ],
        },
      ],
      toolConfig: { functionCallingConfig: { mode: 'ANY', allowedFunctionNames: ['find'] } },
    })
    assert.deepEqual(out.tools, [
      {
        type: 'function',
        function: {
          name: 'find',
          description: 'Find things',
          parameters: {
            type: 'object',
            properties: {
              q: { type: ['string', 'null'] },
              unit: { type: ['string', 'null'], enum: ['c', 'f', null] },
              n: { type: 'integer' },
              tags: { type: 'array', items: { type: 'string' }, maxItems: 3 },
            },
            required: ['n'],
          },
        },
      },
      { type: 'function', function: { name: 'other', parameters: { type: 'object', properties: { a: { type: ['string', 'null'] } } } } },
    ])
    assert.deepEqual(out.tool_choice, { type: 'function', function: { name: 'find' } })
    const several = convertValid('gemini', 'openai', {
      contents: [{ role: 'user', parts: [{ text: 'x' }] }],
      tools: [{ functionDeclarations: [{ name: 'a' }, { name: 'b' }, { name: 'c' }] }],
      toolConfig: { functionCallingConfig: { mode: 'ANY', allowedFunctionNames: ['a', 'b'] } },
    })
    assert.deepEqual(
      (several.tools as { function: { name: string } }[]).map((t) => t.function.name),
      ['a', 'b'],
    )
    assert.equal(several.tool_choice, 'required')
    assertRefused('gemini', 'openai', { contents: [{ parts: [{ text: 'x' }] }], tools: [{ googleSearch: {} }] }, 'tools[0].googleSearch')
  })

  test('Claude Code style schemas reach Gemini without $schema and with local $refs inlined', () => {
    const schema = {
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      type: 'object',
      properties: {
        todos: { type: 'array', items: { $ref: '#/$defs/todo', description: 'One item' } },
        status: {
          anyOf: [
            { type: 'string', enum: ['pending', 'done'] },
            { type: 'string', const: 'deleted' },
          ],
        },
        max_turns: { type: 'integer', exclusiveMinimum: 0, maximum: 9007199254740991 },
      },
      required: ['todos'],
      additionalProperties: false,
      $defs: { todo: { type: 'object', properties: { content: { type: 'string', minLength: 1 } }, required: ['content'] } },
    }
    const out = convertValid('anthropic', 'gemini', {
      model: 'c',
      max_tokens: 10,
      messages: [{ role: 'user', content: 'plan' }],
      tools: [{ name: 'TodoWrite', description: 'Write todos', input_schema: schema }],
    })
    const decl = ((out.tools as GeminiBody['tools'])?.[0]?.functionDeclarations ?? [])[0]
    assert.deepEqual(decl?.parametersJsonSchema, {
      type: 'object',
      properties: {
        todos: {
          type: 'array',
          items: {
            type: 'object',
            properties: { content: { type: 'string', minLength: 1 } },
            required: ['content'],
            description: 'One item',
          },
        },
        status: {
          anyOf: [
            { type: 'string', enum: ['pending', 'done'] },
            { type: 'string', const: 'deleted' },
          ],
        },
        max_turns: { type: 'integer', exclusiveMinimum: 0, maximum: 9007199254740991 },
      },
      required: ['todos'],
      additionalProperties: false,
    })
    assert.equal(JSON.stringify(schema).includes('$schema'), true, "the client's schema is not changed")
  })

  test('$refs that double at each step are refused with the field named, at once, not inlined into gigabytes', () => {
    // d0 is a string; each next definition refers to the previous one twice: 2^30 nodes once inlined.
    const $defs: Record<string, unknown> = { d0: { type: 'string' } }
    for (let i = 1; i <= 30; i++)
      $defs[`d${i}`] = { type: 'object', properties: { a: { $ref: `#/$defs/d${i - 1}` }, b: { $ref: `#/$defs/d${i - 1}` } } }
    const bomb = { type: 'object', properties: { x: { $ref: '#/$defs/d30' } }, $defs }
    assertRefused(
      'openai',
      'gemini',
      {
        model: 'x',
        messages: [{ role: 'user', content: 'x' }],
        tools: [{ type: 'function', function: { name: 'bomb', parameters: bomb } }],
      },
      'tools ("bomb"): its parameters',
      /add more than 2000000 characters of schema/,
    )
    assertRefused(
      'openai',
      'gemini',
      {
        model: 'x',
        messages: [{ role: 'user', content: 'x' }],
        response_format: { type: 'json_schema', json_schema: { name: 'b', schema: bomb } },
      },
      'the response format: its schema',
    )
    // Eleven doublings (~6,000 nodes, ~100 KB once inlined) are a large schema, not an attack: inlined.
    const $small: Record<string, unknown> = { d0: { type: 'string' } }
    for (let i = 1; i <= 11; i++)
      $small[`d${i}`] = { type: 'object', properties: { a: { $ref: `#/$defs/d${i - 1}` }, b: { $ref: `#/$defs/d${i - 1}` } } }
    convertValid('openai', 'gemini', {
      model: 'x',
      messages: [{ role: 'user', content: 'x' }],
      tools: [
        {
          type: 'function',
          function: { name: 'big', parameters: { type: 'object', properties: { x: { $ref: '#/$defs/d11' } }, $defs: $small } },
        },
      ],
    })
  })

  test('one definition carrying a long text, referred to many times, is counted by what its copies add, not as one node each', () => {
    // Its description (and enum, default, examples…) are copied whole into each reference: 19,000 references of a
    // 25 KB description made 476 MB of request from 679 KB.
    const refs = (n: number, description: string) => {
      const properties: Record<string, unknown> = {}
      for (let i = 0; i < n; i++) properties[`p${i}`] = { $ref: '#/$defs/shared' }
      const schema = { type: 'object', properties, $defs: { shared: { type: 'string', description, enum: ['a', 'b'] } } }
      return {
        model: 'x',
        messages: [{ role: 'user', content: 'x' }],
        tools: [{ type: 'function', function: { name: 'wide', parameters: schema } }],
      }
    }
    // Refused by what the copies would add (the message says so), before they are made.
    assertRefused(
      'openai',
      'gemini',
      refs(19_000, 'd'.repeat(25_000)),
      'tools ("wide"): its parameters',
      /add more than 2000000 characters/,
    )
    // What the copies add is what is counted: 150 copies of 10 KB (1.5 MB) pass, 250 (2.5 MB) do not.
    const out = convertValid('openai', 'gemini', refs(150, 'd'.repeat(10_000)))
    assert.ok(JSON.stringify(out).length > 1_500_000)
    assertRefused('openai', 'gemini', refs(250, 'd'.repeat(10_000)), 'tools ("wide"): its parameters')
    // Property names of an inlined definition are copied too.
    const names: Record<string, unknown> = { [`n${'x'.repeat(100_000)}`]: {} }
    const wide = refs(30, '')
    const tool = (wide.tools[0] as { function: { parameters: { $defs: { shared: Record<string, unknown> } } } }).function
    tool.parameters.$defs.shared = { type: 'object', properties: names }
    assertRefused('openai', 'gemini', wide, 'tools ("wide"): its parameters', /characters/)
  })

  test('a chain of definitions each referring to the next is refused past 128 levels, not inlined until the stack overflows', () => {
    const chain = (n: number) => {
      const $defs: Record<string, unknown> = { d0: { type: 'string' } }
      for (let i = 1; i <= n; i++) $defs[`d${i}`] = { $ref: `#/$defs/d${i - 1}` }
      return {
        model: 'x',
        messages: [{ role: 'user', content: 'x' }],
        tools: [
          {
            type: 'function',
            function: { name: 'chain', parameters: { type: 'object', properties: { x: { $ref: `#/$defs/d${n}` } }, $defs } },
          },
        ],
      }
    }
    assertRefused('openai', 'gemini', chain(20_000), 'tools ("chain"): its parameters', /more than 128 levels deep/)
    const out = convertValid('openai', 'gemini', chain(100))
    const decl = ((out.tools as GeminiBody['tools'])?.[0]?.functionDeclarations ?? [])[0]
    assert.deepEqual(decl?.parametersJsonSchema, { type: 'object', properties: { x: { type: 'string' } } })
  })

  test('a recursive $ref stays a bare $ref with its $defs (Gemini unrolls it), the rest is inlined', () => {
    const tree = {
      type: 'object',
      properties: { root: { $ref: '#/definitions/node', description: 'The root' } },
      definitions: {
        node: { type: 'object', properties: { children: { type: 'array', items: { $ref: '#/definitions/node', title: 'child' } } } },
      },
    }
    const out = convertValid('openai', 'gemini', {
      model: 'x',
      messages: [{ role: 'user', content: 'x' }],
      tools: [{ type: 'function', function: { name: 'tree', parameters: tree } }],
    })
    const decl = ((out.tools as GeminiBody['tools'])?.[0]?.functionDeclarations ?? [])[0]
    assert.deepEqual(decl?.parametersJsonSchema, {
      type: 'object',
      properties: {
        root: {
          type: 'object',
          properties: { children: { type: 'array', items: { $ref: '#/definitions/node' } } },
          description: 'The root',
        },
      },
      // A $ref there may have only `$` siblings.
      definitions: { node: { type: 'object', properties: { children: { type: 'array', items: { $ref: '#/definitions/node' } } } } },
    })
  })
})

describe('tool calls and results in the history', () => {
  const openaiLoop = {
    model: 'gpt-x',
    messages: [
      { role: 'user', content: 'Weather in Paris and Rome?' },
      {
        role: 'assistant',
        content: null,
        tool_calls: [
          { id: 'call_a', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } },
          { id: 'call_b', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Rome"}' } },
        ],
      },
      { role: 'tool', tool_call_id: 'call_b', content: '21C' },
      { role: 'tool', tool_call_id: 'call_a', content: [{ type: 'text', text: '18C' }] },
      { role: 'user', content: 'Which is warmer?' },
    ],
    tools: openaiTools.tools,
  }

  test('OpenAI parallel calls and tool messages → Anthropic tool_use blocks and one user turn of results, results first', () => {
    const out = convertValid('openai', 'anthropic', openaiLoop)
    const expected: AnthropicBody['messages'] = [
      { role: 'user', content: [{ type: 'text', text: 'Weather in Paris and Rome?' }] },
      {
        role: 'assistant',
        content: [
          { type: 'tool_use', id: 'call_a', name: 'get_weather', input: { city: 'Paris' } },
          { type: 'tool_use', id: 'call_b', name: 'get_weather', input: { city: 'Rome' } },
        ],
      },
      {
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: 'call_b', content: '21C' },
          { type: 'tool_result', tool_use_id: 'call_a', content: '18C' },
          { type: 'text', text: 'Which is warmer?' },
        ],
      },
    ]
    assert.deepEqual(out.messages, expected)
  })

  test('OpenAI → Gemini: function calls without ids, responses named after their calls and put in call order', () => {
    const out = convertValid('openai', 'gemini', openaiLoop)
    const expected: GeminiBody['contents'] = [
      { role: 'user', parts: [{ text: 'Weather in Paris and Rome?' }] },
      {
        role: 'model',
        parts: [
          { functionCall: { name: 'get_weather', args: { city: 'Paris' } } },
          { functionCall: { name: 'get_weather', args: { city: 'Rome' } } },
        ],
      },
      {
        role: 'user',
        parts: [
          { functionResponse: { name: 'get_weather', response: { output: '18C' } } },
          { functionResponse: { name: 'get_weather', response: { output: '21C' } } },
        ],
      },
      { role: 'user', parts: [{ text: 'Which is warmer?' }] },
    ]
    assert.deepEqual(out.contents, expected)
  })

  test('a current-turn call without a signature gets the placeholder Gemini 3 accepts; earlier turns need none', () => {
    const loop = { ...openaiLoop, messages: openaiLoop.messages.slice(0, 4) }
    const parts = (convertValid('openai', 'gemini', loop).contents as GeminiBody['contents'])[1]?.parts
    assert.deepEqual(parts, [
      { functionCall: { name: 'get_weather', args: { city: 'Paris' } }, thoughtSignature: 'skip_thought_signature_validator' },
      { functionCall: { name: 'get_weather', args: { city: 'Rome' } } },
    ])
  })

  test('thought signatures carried in tool-call ids are restored on Gemini function calls, ids stripped elsewhere', () => {
    const id = toolCallIdWithSignature('call_1', 'c2lnbmF0dXJl')
    const body = {
      model: 'gpt-x',
      messages: [
        { role: 'user', content: 'x' },
        { role: 'assistant', content: 'Checking.', tool_calls: [{ id, type: 'function', function: { name: 'now', arguments: '' } }] },
        { role: 'tool', tool_call_id: id, content: 'noon' },
      ],
      tools: openaiTools.tools,
    }
    const gemini = convertValid('openai', 'gemini', body)
    assert.deepEqual((gemini.contents as GeminiBody['contents'])[1], {
      role: 'model',
      parts: [{ text: 'Checking.' }, { functionCall: { name: 'now', args: {} }, thoughtSignature: 'c2lnbmF0dXJl' }],
    })
    const anthropic = convertValid('openai', 'anthropic', body)
    const messages = anthropic.messages as { content: { type: string; id?: string; tool_use_id?: string }[] }[]
    assert.equal(messages[1]?.content[1]?.id, 'call_1')
    assert.equal(messages[2]?.content[0]?.tool_use_id, 'call_1')
  })

  test('Anthropic tool_result content arrays with images and is_error → OpenAI tool messages, images after them', () => {
    const out = convertValid('anthropic', 'openai', {
      model: 'c',
      max_tokens: 100,
      messages: [
        { role: 'user', content: 'Take a screenshot and run ls' },
        {
          role: 'assistant',
          content: [
            { type: 'tool_use', id: 'toolu_1', name: 'screenshot', input: {} },
            { type: 'tool_use', id: 'toolu_2', name: 'Bash', input: { command: 'ls' } },
          ],
        },
        {
          role: 'user',
          content: [
            {
              type: 'tool_result',
              tool_use_id: 'toolu_1',
              content: [
                { type: 'text', text: 'Screenshot taken' },
                { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } },
              ],
            },
            { type: 'tool_result', tool_use_id: 'toolu_2', content: [{ type: 'text', text: 'ls: permission denied' }], is_error: true },
          ],
        },
      ],
    })
    const expected: OpenAIBody['messages'] = [
      { role: 'user', content: 'Take a screenshot and run ls' },
      {
        role: 'assistant',
        content: null,
        tool_calls: [
          { id: 'toolu_1', type: 'function', function: { name: 'screenshot', arguments: '{}' } },
          { id: 'toolu_2', type: 'function', function: { name: 'Bash', arguments: '{"command":"ls"}' } },
        ],
      },
      { role: 'tool', tool_call_id: 'toolu_1', content: 'Screenshot taken' },
      { role: 'tool', tool_call_id: 'toolu_2', content: 'Error: ls: permission denied' },
      { role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } }] },
    ]
    assert.deepEqual(out.messages, expected)
  })

  test('Anthropic tool results → Gemini functionResponse output/error; their images in a content of their own', () => {
    const out = convertValid('anthropic', 'gemini', {
      model: 'c',
      max_tokens: 100,
      messages: [
        { role: 'user', content: 'shot' },
        { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'screenshot', input: {} }] },
        {
          role: 'user',
          content: [
            {
              type: 'tool_result',
              tool_use_id: 'toolu_1',
              is_error: true,
              content: [
                { type: 'text', text: 'partial' },
                { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } },
              ],
            },
            { type: 'text', text: 'what do you see?' },
          ],
        },
      ],
    })
    assert.deepEqual((out.contents as GeminiBody['contents']).slice(2), [
      { role: 'user', parts: [{ functionResponse: { name: 'screenshot', response: { error: 'partial' } } }] },
      { role: 'user', parts: [{ inlineData: { mimeType: 'image/png', data: 'iVBORw0KGgo=' } }, { text: 'what do you see?' }] },
    ])
  })

  test('Gemini calls without ids get ids that tie each response to its call', () => {
    const gemini = {
      contents: [
        { role: 'user', parts: [{ text: 'two lookups' }] },
        {
          role: 'model',
          parts: [
            { functionCall: { name: 'lookup', args: { k: 1 } }, thoughtSignature: 'U0lH' },
            { functionCall: { name: 'lookup', args: { k: 2 } } },
            { functionCall: { name: 'other', args: {} } },
          ],
        },
        {
          role: 'user',
          parts: [
            { functionResponse: { name: 'other', response: { result: 'o' } } },
            { functionResponse: { name: 'lookup', response: { output: 'one' } } },
            { functionResponse: { name: 'lookup', response: { value: 2 } } },
          ],
        },
      ],
      tools: [{ functionDeclarations: [{ name: 'lookup' }, { name: 'other' }] }],
    }
    const openai = convertValid('gemini', 'openai', gemini)
    const messages = openai.messages as { role: string; tool_calls?: { id: string }[]; tool_call_id?: string; content: unknown }[]
    const ids = messages[1]?.tool_calls?.map((c) => c.id) ?? []
    assert.equal(new Set(ids).size, 3)
    assert.deepEqual(
      messages.slice(2).map((m) => [m.tool_call_id, m.content]),
      [
        [ids[2], 'o'],
        [ids[0], 'one'],
        [ids[1], '{"value":2}'],
      ],
    )
    const anthropic = convertValid('gemini', 'anthropic', gemini)
    assert.equal((anthropic.messages as unknown[]).length, 3)
  })

  test("Gemini responses with and without ids, a client's id repeated: each takes one call, the first still waiting", () => {
    const call = (id?: string) => ({ functionCall: { name: 'f', args: {}, ...(id === undefined ? {} : { id }) } })
    const answer = (output: string, id?: string) => ({
      functionResponse: { name: 'f', response: { output }, ...(id === undefined ? {} : { id }) },
    })
    const gemini = (answers: unknown[]) => ({
      contents: [
        { role: 'user', parts: [{ text: 'x' }] },
        { role: 'model', parts: [call('x'), call('y'), call('x')] },
        { role: 'user', parts: answers },
      ],
    })
    // The first x answered by its id; y is then the first waiting, and the second x after it.
    const openai = convertRequest('gemini', 'openai', gemini([answer('1', 'x'), answer('2'), answer('3')]), OPTS)
    const results = (openai.messages as { tool_call_id?: string }[]).slice(2).map((m) => m.tool_call_id)
    assert.deepEqual(results, ['x', 'y', 'x'])
    assertRefused(
      'gemini',
      'openai',
      gemini([answer('1', 'x'), answer('2'), answer('3'), answer('4')]),
      'contents[2].parts[3].functionResponse',
    )
  })

  test('tool results pair with their calls by id, not by a search of the calls per result, each way', () => {
    // A search per result made 200,000 results in reverse order take 16 to 32 s (8 MB of request held the event loop
    // for 9 s). Counted, not timed: such searches visit ~n²/2 elements; pairing by id, the conversions search little.
    const n = 2000
    const calls = Array.from({ length: n }, (_v, i) => ({ id: `c${i}`, type: 'function', function: { name: `f${i}`, arguments: '{}' } }))
    const results = Array.from({ length: n }, (_v, i) => ({ role: 'tool', tool_call_id: `c${n - 1 - i}`, content: 'r' }))
    const openai = {
      model: 'x',
      messages: [{ role: 'user', content: 'x' }, { role: 'assistant', content: null, tool_calls: calls }, ...results],
    }
    let gemini: Record<string, unknown> = {}
    const toGemini = elementsSearched(() => {
      gemini = convertRequest('openai', 'gemini', openai, OPTS)
    })
    const responses = (gemini.contents as { parts: { functionResponse?: { name: string } }[] }[])[2]?.parts ?? []
    assert.deepEqual([responses[0]?.functionResponse?.name, responses[n - 1]?.functionResponse?.name], ['f0', `f${n - 1}`])

    const answers = Array.from({ length: n }, (_v, i) => ({ functionResponse: { name: 'f', id: `c${n - 1 - i}`, response: {} } }))
    const request = {
      contents: [
        { role: 'user', parts: [{ text: 'x' }] },
        { role: 'model', parts: Array.from({ length: n }, (_v, i) => ({ functionCall: { name: 'f', args: {}, id: `c${i}` } })) },
        { role: 'user', parts: answers },
      ],
    }
    const fromGemini = elementsSearched(() => convertRequest('gemini', 'anthropic', request, OPTS))
    assert.ok(toGemini < 10 * n && fromGemini < 10 * n, `elements searched: OpenAI → Gemini ${toGemini}, Gemini → Anthropic ${fromGemini}`)
  })

  test('a Gemini model turn streamed in chunks (one model content per chunk, as @google/genai chats keep it) is one assistant turn', () => {
    // What `ai.chats.create(…).sendMessageStream()` sends on the next turn after a streamed answer with a thought (its
    // signature in a chunk of its own, as the gateway streams another upstream's), text and two parallel calls: each
    // chunk's content as it came, the last one with an empty text part.
    const gemini = {
      contents: [
        { role: 'user', parts: [{ text: 'time in Paris and Tokyo?' }] },
        { role: 'model', parts: [{ text: 'thinking ', thought: true }] },
        { role: 'model', parts: [{ text: 'it over', thought: true }] },
        { role: 'model', parts: [{ text: '', thought: true, thoughtSignature: 'U0lH' }] },
        { role: 'model', parts: [{ text: 'Let me ' }] },
        { role: 'model', parts: [{ text: 'check.' }] },
        {
          role: 'model',
          parts: [{ functionCall: { id: 'call_a', name: 'get_time', args: { tz: 'Europe/Paris' } }, thoughtSignature: 'U0lH' }],
        },
        { role: 'model', parts: [{ functionCall: { id: 'call_b', name: 'get_time', args: { tz: 'Asia/Tokyo' } } }] },
        { role: 'model', parts: [{ text: '' }] },
        {
          role: 'user',
          parts: [
            { functionResponse: { id: 'call_a', name: 'get_time', response: { output: '09:00' } } },
            { functionResponse: { id: 'call_b', name: 'get_time', response: { output: '16:00' } } },
          ],
        },
      ],
      tools: [{ functionDeclarations: [{ name: 'get_time' }] }],
    }
    const openai = convertValid('gemini', 'openai', gemini)
    assert.deepEqual(openai.messages, [
      { role: 'user', content: 'time in Paris and Tokyo?' },
      {
        role: 'assistant',
        content: 'Let me check.',
        reasoning_content: 'thinking it over',
        tool_calls: [
          { id: 'call_a', type: 'function', function: { name: 'get_time', arguments: '{"tz":"Europe/Paris"}' } },
          { id: 'call_b', type: 'function', function: { name: 'get_time', arguments: '{"tz":"Asia/Tokyo"}' } },
        ],
      },
      { role: 'tool', tool_call_id: 'call_a', content: '09:00' },
      { role: 'tool', tool_call_id: 'call_b', content: '16:00' },
    ])
    const anthropic = convertValid('gemini', 'anthropic', gemini)
    assert.deepEqual((anthropic.messages as { role: string; content: { type: string }[] }[])[1], {
      role: 'assistant',
      content: [
        { type: 'thinking', thinking: 'thinking it over', signature: 'U0lH' },
        { type: 'text', text: 'Let me ' },
        { type: 'text', text: 'check.' },
        { type: 'tool_use', id: 'call_a', name: 'get_time', input: { tz: 'Europe/Paris' } },
        { type: 'tool_use', id: 'call_b', name: 'get_time', input: { tz: 'Asia/Tokyo' } },
      ],
    })
  })

  test('bad tool history is refused with the field path', () => {
    assertRefused(
      'openai',
      'anthropic',
      {
        model: 'x',
        messages: [
          { role: 'user', content: 'x' },
          { role: 'assistant', tool_calls: [{ id: 'c1', type: 'function', function: { name: 'now', arguments: '{"broken' } }] },
          { role: 'tool', tool_call_id: 'c1', content: 'x' },
        ],
      },
      'messages[1].tool_calls[0].function.arguments',
    )
    assertRefused(
      'openai',
      'gemini',
      {
        model: 'x',
        messages: [
          { role: 'user', content: 'x' },
          { role: 'assistant', content: 'y' },
          { role: 'tool', tool_call_id: 'nope', content: 'z' },
        ],
      },
      'messages[2]',
      /nope/,
    )
    assertRefused(
      'gemini',
      'openai',
      { contents: [{ role: 'user', parts: [{ functionResponse: { name: 'ghost', response: {} } }] }] },
      'contents[0].parts[0].functionResponse',
    )
  })

  test('ids other upstreams made that Anthropic would reject are mapped alike in calls and results', () => {
    const out = convertRequest(
      'openai',
      'anthropic',
      {
        model: 'x',
        messages: [
          { role: 'user', content: 'x' },
          {
            role: 'assistant',
            tool_calls: [
              { id: 'fc.1:a', type: 'function', function: { name: 'now', arguments: '{}' } },
              // Differs only in a character Anthropic refuses: it must stay a different id.
              { id: 'fc.1.a', type: 'function', function: { name: 'now', arguments: '{}' } },
            ],
          },
          { role: 'tool', tool_call_id: 'fc.1:a', content: 'ok' },
          { role: 'tool', tool_call_id: 'fc.1.a', content: 'ok too' },
        ],
      },
      OPTS,
    )
    const messages = out.messages as { content: { id?: string; tool_use_id?: string }[] }[]
    const calls = messages[1]?.content.map((block) => block.id ?? '') ?? []
    const results = messages[2]?.content.map((block) => block.tool_use_id ?? '') ?? []
    for (const id of calls) assert.match(id, /^fc_1_a_[0-9a-f]{8}$/)
    assert.notEqual(calls[0], calls[1])
    assert.deepEqual(results, calls)
  })
})

type ArrayMethod = (this: unknown[], ...args: unknown[]) => unknown

/**
 * Elements the array built-ins that search or shift visit while `work` runs (each call counts its array's length):
 * a search of a list for each of its items makes this quadratic.
 */
function elementsSearched(work: () => void): number {
  const proto = Array.prototype as unknown as Record<string, ArrayMethod>
  const names = ['indexOf', 'lastIndexOf', 'includes', 'find', 'findIndex', 'findLast', 'findLastIndex', 'some', 'every', 'splice']
  const originals = new Map(names.map((name) => [name, proto[name] as ArrayMethod]))
  let visited = 0
  for (const [name, original] of originals) {
    proto[name] = function (...args) {
      visited += this.length
      return original.apply(this, args)
    }
  }
  try {
    work()
  } finally {
    for (const [name, original] of originals) proto[name] = original
  }
  return visited
}
