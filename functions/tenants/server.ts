import { serve } from '../../shared/http/serve.ts';
import { createObservedRuntime } from '../../shared/telemetry/runtime.ts';
import { buildTenantsApp } from './app.ts';

const runtime = await createObservedRuntime('tenants');
await serve(buildTenantsApp(runtime), runtime);
