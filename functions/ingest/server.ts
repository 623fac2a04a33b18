import { serve } from '../../shared/http/serve.ts';
import { createObservedRuntime } from '../../shared/telemetry/runtime.ts';
import { buildIngestApp } from './app.ts';

const runtime = await createObservedRuntime('ingest');
await serve(buildIngestApp(runtime), runtime);
