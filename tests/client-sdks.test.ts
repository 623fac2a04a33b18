/**
 * `trackResponse()` against what the official SDKs really build: each SDK's baseURL points at a local
 * stand-in of its provider answering recorded response shapes (plain and streamed), so the object the
 * meter reads is the SDK's own. The meter sends to a stand-in of FlagMeter's ingest that keeps the
 * events; the real server is covered by tests/client.test.ts and tests/client-package.test.ts.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { createOpenAI } from '@ai-sdk/openai';
import Anthropic from '@anthropic-ai/sdk';
import { generateText, streamText } from 'ai';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMeter, type Meter, type MeterError, type TrackedEvent } from '../packages/client/src/index.ts';

/** An id as long as the providers' own (OpenAI's chatcmpl- ids carry 29 random characters, Anthropic's msg_ 24). */
const providerId = (prefix: string, counter: number): string => `${prefix}${randomBytes(18).toString('base64url')}${counter}`;

const CHAT_USAGE = {
  prompt_tokens: 1117,
  completion_tokens: 46,
  total_tokens: 1163,
  prompt_tokens_details: { cached_tokens: 1024, audio_tokens: 0 },
  completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
};

const chatCompletion = (id: string) => ({
  id,
  object: 'chat.completion',
  created: 1_764_400_000,
  model: 'gpt-4o-2024-08-06',
  choices: [
    {
      index: 0,
      message: { role: 'assistant', content: 'Hello there.', refusal: null, annotations: [] },
      logprobs: null,
      finish_reason: 'stop',
    },
  ],
  usage: CHAT_USAGE,
  service_tier: 'default',
  system_fingerprint: 'fp_fc9f1d7035',
});

/** Chat Completions streaming with `stream_options.include_usage`: the usage arrives in a last chunk with no choices. */
function chatChunks(id: string, includeUsage: boolean): unknown[] {
  const chunk = (choices: unknown[], usage: unknown = null) => ({
    id,
    object: 'chat.completion.chunk',
    created: 1_764_400_000,
    model: 'gpt-4o-2024-08-06',
    system_fingerprint: 'fp_fc9f1d7035',
    choices,
    ...(includeUsage ? { usage } : {}),
  });
  return [
    chunk([{ index: 0, delta: { role: 'assistant', content: '', refusal: null }, logprobs: null, finish_reason: null }]),
    chunk([{ index: 0, delta: { content: 'Hello' }, logprobs: null, finish_reason: null }]),
    chunk([{ index: 0, delta: { content: ' there.' }, logprobs: null, finish_reason: null }]),
    chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' }]),
    ...(includeUsage ? [chunk([], CHAT_USAGE)] : []),
  ];
}

const responsesResponse = (id: string, status: 'in_progress' | 'completed') => ({
  id,
  object: 'response',
  created_at: 1_764_400_000,
  status,
  error: null,
  incomplete_details: null,
  instructions: null,
  max_output_tokens: null,
  model: 'gpt-4.1-2025-04-14',
  output:
    status === 'completed'
      ? [
          {
            type: 'message',
            id: 'msg_67ccd2bf17f0819081ff',
            status: 'completed',
            role: 'assistant',
            content: [{ type: 'output_text', text: 'Hello there.', annotations: [] }],
          },
        ]
      : [],
  parallel_tool_calls: true,
  previous_response_id: null,
  reasoning: { effort: null, summary: null },
  store: true,
  temperature: 1,
  text: { format: { type: 'text' } },
  tool_choice: 'auto',
  tools: [],
  top_p: 1,
  truncation: 'disabled',
  usage:
    status === 'completed'
      ? {
          input_tokens: 36,
          input_tokens_details: { cached_tokens: 0 },
          output_tokens: 87,
          output_tokens_details: { reasoning_tokens: 0 },
          total_tokens: 123,
        }
      : null,
  user: null,
  metadata: {},
});

/** Anthropic reports cache writes and reads apart from `input_tokens`. */
const ANTHROPIC_USAGE = {
  input_tokens: 12,
  cache_creation_input_tokens: 2_048,
  cache_read_input_tokens: 4_096,
  cache_creation: { ephemeral_5m_input_tokens: 2_048, ephemeral_1h_input_tokens: 0 },
  output_tokens: 15,
  service_tier: 'standard',
};

const anthropicMessage = (id: string) => ({
  id,
  type: 'message',
  role: 'assistant',
  model: 'claude-sonnet-4-20250514',
  content: [{ type: 'text', text: 'Hello there.' }],
  stop_reason: 'end_turn',
  stop_sequence: null,
  usage: ANTHROPIC_USAGE,
});

/** A streamed message: message_start carries the input side, message_delta the final output count. */
function anthropicEvents(id: string): [string, unknown][] {
  return [
    [
      'message_start',
      {
        type: 'message_start',
        message: { ...anthropicMessage(id), content: [], stop_reason: null, usage: { ...ANTHROPIC_USAGE, output_tokens: 1 } },
      },
    ],
    ['content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }],
    ['ping', { type: 'ping' }],
    ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hello there.' } }],
    ['content_block_stop', { type: 'content_block_stop', index: 0 }],
    ['message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 15 } }],
    ['message_stop', { type: 'message_stop' }],
  ];
}

function responsesEvents(id: string): [string, unknown][] {
  const item = { type: 'message', id: 'msg_67ccd2bf17f0819081ff', status: 'in_progress', role: 'assistant', content: [] };
  const part = { type: 'output_text', text: '', annotations: [] };
  const events: [string, Record<string, unknown>][] = [
    ['response.created', { response: responsesResponse(id, 'in_progress') }],
    ['response.in_progress', { response: responsesResponse(id, 'in_progress') }],
    ['response.output_item.added', { output_index: 0, item }],
    ['response.content_part.added', { item_id: item.id, output_index: 0, content_index: 0, part }],
    ['response.output_text.delta', { item_id: item.id, output_index: 0, content_index: 0, delta: 'Hello there.', logprobs: [] }],
    ['response.output_text.done', { item_id: item.id, output_index: 0, content_index: 0, text: 'Hello there.', logprobs: [] }],
    ['response.content_part.done', { item_id: item.id, output_index: 0, content_index: 0, part: { ...part, text: 'Hello there.' } }],
    ['response.output_item.done', { output_index: 0, item: responsesResponse(id, 'completed').output[0] }],
    ['response.completed', { response: responsesResponse(id, 'completed') }],
  ];
  return events.map(([type, body], index) => [type, { type, sequence_number: index, ...body }]);
}

function sse(outgoing: ServerResponse, events: [string | undefined, unknown][], done = false): void {
  outgoing.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  for (const [name, data] of events) outgoing.write(`${name === undefined ? '' : `event: ${name}\n`}data: ${JSON.stringify(data)}\n\n`);
  if (done) outgoing.write('data: [DONE]\n\n');
  outgoing.end();
}

async function readJson(incoming: IncomingMessage): Promise<Record<string, unknown>> {
  let text = '';
  for await (const chunk of incoming) text += chunk;
  return JSON.parse(text) as Record<string, unknown>;
}

interface Stand {
  url: string;
  close(): Promise<void>;
}

async function listen(handler: (incoming: IncomingMessage, outgoing: ServerResponse) => Promise<void>): Promise<Stand> {
  const server = createServer((incoming, outgoing) => {
    handler(incoming, outgoing).catch((error: unknown) => {
      outgoing.writeHead(500).end(String(error));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** OpenAI and Anthropic in one server: each request gets a fresh id, so every test knows what to expect. */
function providerStandIn(): Promise<Stand & { lastId(): string }> {
  let counter = 0;
  let lastId = '';
  return listen(async (incoming, outgoing) => {
    const body = await readJson(incoming);
    const stream = body.stream === true;
    counter++;
    if (incoming.url === '/v1/chat/completions') {
      lastId = providerId('chatcmpl-', counter);
      const includeUsage = (body.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true;
      if (stream)
        return sse(
          outgoing,
          chatChunks(lastId, includeUsage).map((chunk) => [undefined, chunk]),
          true,
        );
      outgoing.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(chatCompletion(lastId)));
    } else if (incoming.url === '/v1/responses') {
      lastId = providerId('resp_', counter);
      if (stream) return sse(outgoing, responsesEvents(lastId));
      outgoing.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(responsesResponse(lastId, 'completed')));
    } else if (incoming.url === '/v1/messages') {
      lastId = providerId('msg_', counter);
      if (stream) return sse(outgoing, anthropicEvents(lastId));
      outgoing
        .writeHead(200, { 'content-type': 'application/json', 'request-id': 'req_stand' })
        .end(JSON.stringify(anthropicMessage(lastId)));
    } else {
      outgoing
        .writeHead(404, { 'content-type': 'application/json' })
        .end(JSON.stringify({ error: { message: `no route ${incoming.url}` } }));
    }
  }).then((stand) => ({ ...stand, lastId: () => lastId }));
}

/** Answers POST /api/events as FlagMeter's ingest does for new events, and keeps them. */
function ingestStandIn(): Promise<Stand & { events: TrackedEvent[] }> {
  const events: TrackedEvent[] = [];
  return listen(async (incoming, outgoing) => {
    const batch = (await readJson(incoming)).events as TrackedEvent[];
    events.push(...batch);
    outgoing.writeHead(202, { 'content-type': 'application/json' });
    outgoing.end(JSON.stringify({ accepted: batch.length, duplicates: 0, ids: batch.map((event) => event.id), duplicateIndexes: [] }));
  }).then((stand) => ({ ...stand, events }));
}

describe('trackResponse() reads what the official SDKs return', () => {
  let provider: Awaited<ReturnType<typeof providerStandIn>>;
  let ingest: Awaited<ReturnType<typeof ingestStandIn>>;
  let meter: Meter;
  const errors: MeterError[] = [];
  let openai: OpenAI;
  let anthropic: Anthropic;
  let aiProvider: ReturnType<typeof createOpenAI>;

  beforeAll(async () => {
    [provider, ingest] = await Promise.all([providerStandIn(), ingestStandIn()]);
    meter = createMeter({ url: ingest.url, apiKey: 'fm_stand_in', onError: (error) => errors.push(error) });
    openai = new OpenAI({ baseURL: `${provider.url}/v1`, apiKey: 'sk-stand-in', maxRetries: 0 });
    anthropic = new Anthropic({ baseURL: provider.url, apiKey: 'sk-ant-stand-in', maxRetries: 0 });
    aiProvider = createOpenAI({ baseURL: `${provider.url}/v1`, apiKey: 'sk-stand-in' });
  });

  afterAll(async () => {
    await meter?.close({ timeoutMs: 5_000 });
    await Promise.all([provider?.close(), ingest?.close()]);
  });

  /** Delivers what was tracked and returns the event the stand-in ingest received for `id`. */
  async function sent(id: string | undefined): Promise<TrackedEvent> {
    expect(errors).toEqual([]);
    await meter.flush();
    const event = ingest.events.find((candidate) => candidate.id === id);
    if (!event) throw new Error(`no event with id ${id} reached the ingest stand-in`);
    return event;
  }

  it('meters an OpenAI chat completion: total_tokens, the model and the chatcmpl id', async () => {
    const completion = await openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'Hi' }] });
    const id = await meter.trackResponse(completion, { tenant: 'acme' });
    expect(id).toBe(provider.lastId());
    expect(await sent(id)).toMatchObject({ tenant: 'acme', feature: 'gpt-4o-2024-08-06', tokens: 1_163 });
  });

  it('meters a streamed OpenAI chat completion from its last chunk when include_usage is set', async () => {
    const stream = await openai.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'Hi' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let id: string | undefined;
    for await (const chunk of stream) if (chunk.usage) id = await meter.trackResponse(chunk, { tenant: 'acme' });
    expect(id).toBe(provider.lastId());
    expect(await sent(id)).toMatchObject({ feature: 'gpt-4o-2024-08-06', tokens: 1_163 });
  });

  it('reports a chunk of a stream without include_usage as invalid instead of sending zero tokens', async () => {
    const stream = await openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'Hi' }], stream: true });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    const reported: MeterError[] = [];
    const strict = createMeter({ url: ingest.url, apiKey: 'fm_stand_in', onError: (error) => reported.push(error) });
    expect(await strict.trackResponse(chunks.at(-1)!, { tenant: 'acme' })).toBeUndefined();
    await strict.close();
    expect(reported.map((error) => [error.kind, error.message])).toEqual([['invalid', 'the response has no usage block with tokens']]);
  });

  it('meters an OpenAI Responses API response, plain and streamed (the response.completed event)', async () => {
    const response = await openai.responses.create({ model: 'gpt-4.1', input: 'Hi' });
    const plainId = await meter.trackResponse(response, { tenant: 'acme' });
    expect(plainId).toBe(provider.lastId());

    const stream = await openai.responses.create({ model: 'gpt-4.1', input: 'Hi', stream: true });
    let streamedId: string | undefined;
    for await (const event of stream)
      if (event.type === 'response.completed') streamedId = await meter.trackResponse(event.response, { tenant: 'acme' });
    expect(streamedId).toBe(provider.lastId());

    const helper = openai.responses.stream({ model: 'gpt-4.1', input: 'Hi' });
    const helperId = await meter.trackResponse(await helper.finalResponse(), { tenant: 'acme' });
    expect(helperId).toBe(provider.lastId());

    for (const id of [plainId, streamedId, helperId]) expect(await sent(id)).toMatchObject({ feature: 'gpt-4.1-2025-04-14', tokens: 123 });
  });

  it('meters an Anthropic message as input plus output, and with includeCache its cache writes and reads too', async () => {
    const message = await anthropic.messages.create({
      model: 'claude-sonnet-4-20250514',
      max_tokens: 64,
      messages: [{ role: 'user', content: 'Hi' }],
    });
    expect(message.usage.cache_read_input_tokens).toBe(4_096);
    const id = await meter.trackResponse(message, { tenant: 'acme' });
    expect(await sent(id)).toMatchObject({ feature: 'claude-sonnet-4-20250514', tokens: 12 + 15, id: provider.lastId() });

    const again = await anthropic.messages.create({
      model: 'claude-sonnet-4-20250514',
      max_tokens: 64,
      messages: [{ role: 'user', content: 'Hi' }],
    });
    const withCache = await meter.trackResponse(again, { tenant: 'acme', includeCache: true });
    expect(await sent(withCache)).toMatchObject({ tokens: 12 + 15 + 2_048 + 4_096 });
  });

  it('meters a streamed Anthropic message from finalMessage(), whose usage holds the final output count', async () => {
    const stream = anthropic.messages.stream({
      model: 'claude-sonnet-4-20250514',
      max_tokens: 64,
      messages: [{ role: 'user', content: 'Hi' }],
    });
    const final = await stream.finalMessage();
    const id = await meter.trackResponse(final, { tenant: 'acme', includeCache: true });
    expect(id).toBe(provider.lastId());
    expect(await sent(id)).toMatchObject({ feature: 'claude-sonnet-4-20250514', tokens: 12 + 15 + 2_048 + 4_096 });
  });

  it('meters a Vercel AI SDK generateText() result: totalTokens, response.modelId and response.id', async () => {
    const result = await generateText({ model: aiProvider.chat('gpt-4o'), prompt: 'Hi' });
    expect(result.usage).toMatchObject({ inputTokens: 1_117, outputTokens: 46, totalTokens: 1_163 });
    const id = await meter.trackResponse(result, { tenant: 'acme' });
    expect(id).toBe(provider.lastId());
    expect(await sent(id)).toMatchObject({ feature: 'gpt-4o-2024-08-06', tokens: 1_163 });
  });

  it('meters a Vercel AI SDK streamText() from its onEnd event and from its awaited usage and response', async () => {
    let fromEvent: Promise<string | undefined> | undefined;
    const result = streamText({
      model: aiProvider.chat('gpt-4o'),
      prompt: 'Hi',
      onEnd: (event) => {
        fromEvent = meter.trackResponse(event, { tenant: 'acme' });
      },
    });
    await result.consumeStream();
    const eventId = await fromEvent;
    expect(eventId).toBe(provider.lastId());
    expect(await sent(eventId)).toMatchObject({ feature: 'gpt-4o-2024-08-06', tokens: 1_163 });

    // The same call tracked again from the result's promises counts once: same id.
    const awaitedId = await meter.trackResponse({ usage: await result.usage, response: await result.response }, { tenant: 'acme' });
    expect(awaitedId).toBe(eventId);
  });
});
