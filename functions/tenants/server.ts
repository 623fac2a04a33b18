import { serve } from '../../shared/http/serve.ts';
import { createRuntime } from '../../shared/runtime.ts';
import { buildTenantsApp } from './app.ts';

const runtime = await createRuntime('tenants');
await serve(buildTenantsApp(runtime), runtime);
