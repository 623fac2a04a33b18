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

/** Anything with a usage block, id and model, as both SDKs return. */
export interface ModelResponse {
  id?: string;
  model?: string;
  usage?: OpenAIUsage | AnthropicUsage | null;
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

/** Either SDK's usage block; 0 when there is none (e.g. a stream without usage reporting). */
export function tokensFromUsage(usage: OpenAIUsage | AnthropicUsage | null | undefined): number {
  if (!usage) return 0;
  if ('total_tokens' in usage && typeof usage.total_tokens === 'number') return usage.total_tokens;
  if ('prompt_tokens' in usage || 'completion_tokens' in usage) return tokensFromOpenAI(usage);
  return tokensFromAnthropic(usage as AnthropicUsage);
}
