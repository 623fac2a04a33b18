import { serve } from '../../shared/http/serve.ts';
import { createObservedRuntime } from '../../shared/telemetry/runtime.ts';
import { buildUsageApp } from './app.ts';

const runtime = await createObservedRuntime('usage');
await serve(buildUsageApp(runtime), runtime);
