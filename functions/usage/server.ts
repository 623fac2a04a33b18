import { serve } from '../../shared/http/serve.ts';
import { createRuntime } from '../../shared/runtime.ts';
import { buildUsageApp } from './app.ts';

const runtime = await createRuntime('usage');
await serve(buildUsageApp(runtime), runtime);
