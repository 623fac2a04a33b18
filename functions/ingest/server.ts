import { serve } from '../../shared/runtime/serve.ts';
import { createObservedRuntime } from '../../shared/runtime/observed.ts';
import { buildIngestApp } from './app.ts';

const runtime = await createObservedRuntime('ingest');
await serve(buildIngestApp(runtime), runtime);
