import { serve } from '../../shared/runtime/serve.ts';
import { createObservedRuntime } from '../../shared/runtime/observed.ts';
import { buildHealthApp } from './app.ts';

const runtime = await createObservedRuntime('health', { withoutKeys: true });
await serve(buildHealthApp(runtime), runtime);
