import { serve } from '../../shared/http/serve.ts';
import { createRuntime } from '../../shared/runtime.ts';
import { buildIngestApp } from './app.ts';

const runtime = await createRuntime('ingest');
await serve(buildIngestApp(runtime), runtime);
