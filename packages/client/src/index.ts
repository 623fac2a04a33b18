/**
 * `@flagmeter/client`: meter a model call in one line, exactly once end to end.
 *
 *   const meter = createMeter({ url: 'https://meter.example.com', apiKey: process.env.FLAGMETER_KEY! });
 *   meter.trackResponse(completion, { tenant: 'acme' });
 *
 * No dependencies beyond the runtime's fetch; no Node-only module.
 */
import { Meter, type MeterOptions } from './meter.ts';

export function createMeter(options: MeterOptions): Meter {
  return new Meter(options);
}

export { FlagMeterError, parseRetryAfter, type RetryPolicy, retryDelay } from './http.ts';
export { type BufferFullPolicy, Meter, type MeterError, type MeterErrorKind, type MeterOptions, type MeterStats } from './meter.ts';
export {
  type AISDKUsage,
  type AnthropicUsage,
  type ModelResponse,
  type OpenAIUsage,
  tokensFromAISDK,
  tokensFromAnthropic,
  tokensFromOpenAI,
  tokensFromUsage,
} from './model-usage.ts';
export type { ErrorBody, ErrorDetail, IngestResult, QuotaCheck, TrackedEvent, TrackEvent, UsageReport } from './types.ts';
