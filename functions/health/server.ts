import { serve } from '../../shared/http/serve.ts';
import { createObservedRuntime } from '../../shared/telemetry/runtime.ts';
import { buildHealthApp } from './app.ts';

const runtime = await createObservedRuntime('health', { withoutKeys: true });
await serve(buildHealthApp(runtime), runtime);
