import { serve } from '../../shared/runtime/serve.ts';
import { createObservedRuntime } from '../../shared/runtime/observed.ts';
import { buildTenantsApp } from './app.ts';

const runtime = await createObservedRuntime('tenants', { withoutQueue: true });
await serve(buildTenantsApp(runtime), runtime);
