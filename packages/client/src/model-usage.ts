/** The usage block of an OpenAI response (Chat Completions or Responses API). */
export interface OpenAIUsage {
  total_tokens?: number | null;
  prompt_tokens?: number | null;
  completion_tokens?: number | null;
  input_tokens?: number | null;
  output_tokens?: number | null;
}

/** The usage block of an Anthropic Messages response. */
export interface AnthropicUsage {
  input_tokens: number;
  output_tokens: number;
  cache_creation_input_tokens?: number | null;
  cache_read_input_tokens?: number | null;
}

/**
 * The usage of a Vercel AI SDK (`ai`) result: `generateText()`'s result, `streamText()`'s end event,
 * a step. `totalTokens` counts cached input as well.
 */
export interface AISDKUsage {
  inputTokens?: number | undefined;
  outputTokens?: number | undefined;
  totalTokens?: number | undefined;
}

/**
 * Anything with a usage block, as the SDKs return: an OpenAI chat completion, chunk or response, an
 * Anthropic message, a Vercel AI SDK result (its id and model sit in `response`, its all-steps sum in
 * `totalUsage` on versions where `usage` is the last step's).
 */
export interface ModelResponse {
  id?: string;
  model?: string | { modelId?: string };
  usage?: OpenAIUsage | AnthropicUsage | AISDKUsage | null;
  totalUsage?: AISDKUsage | null;
  response?: { id?: string; modelId?: string };
}

const count = (value: number | null | undefined): number => (typeof value === 'number' && Number.isFinite(value) ? value : 0);

/** OpenAI: `total_tokens`, or the sum of its parts when a proxy leaves the total out. */
export function tokensFromOpenAI(usage: OpenAIUsage): number {
  if (typeof usage.total_tokens === 'number') return usage.total_tokens;
  return count(usage.prompt_tokens) + count(usage.completion_tokens) + count(usage.input_tokens) + count(usage.output_tokens);
}

/**
 * Anthropic: `input_tokens + output_tokens`. Cache writes and reads are reported apart from
 * `input_tokens`; `includeCache` adds them for teams that resell cached tokens too.
 */
export function tokensFromAnthropic(usage: AnthropicUsage, { includeCache = false }: { includeCache?: boolean } = {}): number {
  const base = count(usage.input_tokens) + count(usage.output_tokens);
  return includeCache ? base + count(usage.cache_creation_input_tokens) + count(usage.cache_read_input_tokens) : base;
}

/** Vercel AI SDK: `totalTokens`, or input plus output when a provider leaves the total out. */
export function tokensFromAISDK(usage: AISDKUsage): number {
  if (typeof usage.totalTokens === 'number') return usage.totalTokens;
  return count(usage.inputTokens) + count(usage.outputTokens);
}

/** Any of the three SDKs' usage blocks; 0 when there is none (e.g. a stream without usage reporting). */
export function tokensFromUsage(usage: OpenAIUsage | AnthropicUsage | AISDKUsage | null | undefined, options: { includeCache?: boolean } = {}): number {
  if (!usage) return 0;
  if ('total_tokens' in usage && typeof usage.total_tokens === 'number') return usage.total_tokens;
  if ('prompt_tokens' in usage || 'completion_tokens' in usage) return tokensFromOpenAI(usage);
  if ('totalTokens' in usage || 'inputTokens' in usage || 'outputTokens' in usage) return tokensFromAISDK(usage);
  return tokensFromAnthropic(usage as AnthropicUsage, options);
}

/** What `trackResponse()` meters: tokens (the all-steps sum where there is one), model and id. */
export function readResponse(response: ModelResponse, options: { includeCache?: boolean } = {}): { tokens: number; model: string | undefined; id: string | undefined } {
  // The AI SDK's `response.modelId` is the model that answered (`gpt-4o-2024-08-06`), `model` the one asked for.
  const model = typeof response.model === 'string' ? response.model : (response.response?.modelId ?? response.model?.modelId);
  return { tokens: tokensFromUsage(response.totalUsage ?? response.usage, options), model, id: response.id ?? response.response?.id };
}
