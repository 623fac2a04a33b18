import { serve } from '../../shared/runtime/serve.ts';
import { createObservedRuntime } from '../../shared/runtime/observed.ts';
import { buildUsageApp } from './app.ts';

const runtime = await createObservedRuntime('usage', { withoutQueue: true });
await serve(buildUsageApp(runtime), runtime);
