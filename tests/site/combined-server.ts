/**
 * The API functions, the aggregator and the mounted site in one process: what `npm start` serves
 * once it calls mountSite, started by the browser tests as a real process on real services.
 */
import { startAggregator } from '../../functions/aggregator/service.ts';
import { registerHealth } from '../../functions/health/app.ts';
import { registerIngest } from '../../functions/ingest/app.ts';
import { registerTenants } from '../../functions/tenants/app.ts';
import { registerUsage } from '../../functions/usage/app.ts';
import { createHttpApp } from '../../shared/platform/http/app.ts';
import { createRuntime } from '../../shared/runtime/runtime.ts';
import { mountSite } from '../../site/server.ts';

const runtime = await createRuntime('flagmeter-site-test');
const app = createHttpApp(runtime.logger);
registerIngest(app, runtime);
registerUsage(app, runtime);
registerHealth(app, runtime);
registerTenants(app, runtime);
await mountSite(app, runtime);
const aggregator = await startAggregator(runtime);
await app.listen({ port: runtime.config.PORT, host: runtime.config.HOST });

process.on('SIGTERM', () => {
  void app
    .close()
    .then(() => aggregator.stop())
    .then(() => runtime.close())
    .finally(() => process.exit(0));
});
