import { serve } from '../../shared/http/serve.ts';
import { createRuntime } from '../../shared/runtime.ts';
import { buildHealthApp } from './app.ts';

const runtime = await createRuntime('health', { withoutKeys: true });
await serve(buildHealthApp(runtime), runtime);
