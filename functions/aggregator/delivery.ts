import { setTimeout as sleep } from 'node:timers/promises';
import { type Db, retryUntilDone } from '../../shared/platform/db.ts';
import type { Logger } from '../../shared/platform/logger.ts';
import { percentOf } from '../../shared/domain/usage.ts';
import { type WebhookPolicy, postWebhook, retryAfterMs, webhookUrlProblem } from '../../shared/domain/webhooks.ts';

export type DeliveryOutcome = 'delivered' | 'retry' | 'rate_limited' | 'failed' | 'no_webhook';

export interface DeliveryOptions {
  db: Db;
  logger: Logger;
  policy: WebhookPolicy;
  globalWebhookUrl: string | undefined;
  publicUrl: string;
  giveUpMs: number;
  retryBaseMs: number;
  timeoutMs: number;
  pollMs?: number;
  maxInFlight?: number;
  /** Deliveries to one host (and port) at once, so one slow host cannot take every slot. */
  maxPerHost?: number;
  onOutcome?: (outcome: DeliveryOutcome, attempts: number) => void;
}

interface ClaimedAlert {
  id: bigint;
  tenant: string;
  period_start: string;
  threshold: number;
  used_tokens: bigint;
  quota: bigint;
  attempts: number;
  created_at: Date;
  webhook: string | null;
  time_zone: string;
}

const MAX_BACKOFF_MS = 10 * 60_000;
/** Slack's limit on a header block's text (docs.slack.dev, header block). */
const SLACK_HEADER_MAX = 150;
// Due alerts looked at per claim: enough to reach past a slow host's backlog to other hosts' alerts.
const CLAIM_SCAN = 500;
// Alerts with no webhook settled per statement.
const SETTLE_BATCH = 1_000;

/** The key deliveries are capped by: host and port of the URL (an unreadable URL is its own key). */
function hostOf(url: string | null | undefined): string {
  if (!url) return '';
  try {
    return new URL(url).host.toLowerCase();
  } catch {
    return url;
  }
}
const number = (value: bigint): string => value.toLocaleString('en-US');

/** The Slack message: blocks with tenant, percent, used/quota, period and a link to the tenant's page for that period. */
export function slackMessage(
  alert: Pick<ClaimedAlert, 'tenant' | 'period_start' | 'threshold' | 'used_tokens' | 'quota' | 'time_zone'>,
  publicUrl: string,
): object {
  const percent = percentOf(alert.used_tokens, alert.quota);
  // The alert's own period: the link still shows the month that alerted once the next has begun.
  const link = `${publicUrl.replace(/\/$/, '')}/dashboard/tenants/${encodeURIComponent(alert.tenant)}?period=${alert.period_start.slice(0, 7)}`;
  const headline = `${alert.tenant} reached ${alert.threshold}% of its monthly quota`;
  // Slack refuses a header block over 150 characters (a tenant name may be 128): the whole headline
  // stays in `text` and the Tenant field.
  const full = `${alert.threshold >= 100 ? '🚨' : '⚠️'} ${headline}`;
  const header = full.length <= SLACK_HEADER_MAX ? full : `${full.slice(0, SLACK_HEADER_MAX - 1)}…`;
  const usage = `${number(alert.used_tokens)} / ${number(alert.quota)} tokens`;
  return {
    text: `${headline}: ${percent}% used (${usage})`,
    blocks: [
      { type: 'header', text: { type: 'plain_text', text: header } },
      {
        type: 'section',
        fields: [
          { type: 'mrkdwn', text: `*Tenant*\n${alert.tenant}` },
          { type: 'mrkdwn', text: `*Used*\n${percent}%` },
          { type: 'mrkdwn', text: `*Used / quota*\n${usage}` },
          { type: 'mrkdwn', text: `*Period*\n${alert.period_start.slice(0, 7)} (${alert.time_zone})` },
        ],
      },
      { type: 'actions', elements: [{ type: 'button', text: { type: 'plain_text', text: 'Open dashboard' }, url: link }] },
    ],
  };
}

/**
 * The alert outbox worker. It claims due alerts with a visibility timeout (so replicas never send the
 * same alert at once, and a crash mid-send only delays it), sends each on its own so that one slow or
 * failing webhook holds up no other tenant, and never touches the aggregation path.
 */
/**
 * A webhook's answer (or an error quoting one) as last_error may hold it: control characters are
 * written as \uXXXX escapes. PostgreSQL text cannot hold NUL; had one come in an answer, every
 * update of the alert would fail and the delivery would be retried past its give-up time for ever.
 */
export function storableText(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
  return text.replace(/[\u0000-\u001f\u007f]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export class AlertDelivery {
  private readonly inFlight = new Set<Promise<void>>();
  private readonly perHost = new Map<string, number>();
  private stopping = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  /** Alerts may have been created since the last settling of those with no webhook. */
  private unsettled = true;

  constructor(private readonly options: DeliveryOptions) {}

  start(): void {
    this.loop = this.run();
  }

  /** Look for due alerts now (called after a commit that created some). */
  notify(): void {
    this.unsettled = true;
    this.wake?.();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.notify();
    await this.loop;
    await Promise.allSettled(this.inFlight);
  }

  private async run(): Promise<void> {
    const pollMs = this.options.pollMs ?? 200;
    while (!this.stopping) {
      try {
        if (this.unsettled) {
          this.unsettled = false;
          await this.settleUnaddressed();
        }
        await this.claimAndSend();
      } catch (error) {
        this.options.logger.warn({ err: (error as Error).message }, 'alert delivery poll failed');
      }
      const woken = new Promise<boolean>((resolve) => (this.wake = () => resolve(true)));
      // A whole quiet poll interval settles again: alerts also fall due with time.
      if (!(await Promise.race([sleep(pollMs).then(() => false), woken]))) this.unsettled = true;
    }
  }

  /**
   * Settles, in one statement per `SETTLE_BATCH`, the due alerts that have no webhook to go to (none
   * on the tenant and no global one): they take no delivery slot, so a storm of crossings (every
   * tenant past 80% at once) costs a few set-based writes, not a claim and a write per alert.
   */
  private async settleUnaddressed(): Promise<void> {
    if (this.options.globalWebhookUrl) return;
    for (;;) {
      const settled = await this.options.db.query<{ attempts: number }>(
        `WITH due AS (
           SELECT a.id FROM alerts a JOIN tenants t ON t.name = a.tenant
           WHERE a.status = 'pending' AND a.next_attempt_at <= now() AND t.slack_webhook_url IS NULL
           ORDER BY a.next_attempt_at, a.id LIMIT $1 FOR UPDATE OF a SKIP LOCKED)
         UPDATE alerts a SET status = 'no_webhook', attempts = a.attempts + 1, last_error = 'no webhook configured'
         FROM due WHERE a.id = due.id
         RETURNING a.attempts`,
        [SETTLE_BATCH],
      );
      for (const alert of settled) this.outcome('no_webhook', alert.attempts);
      if (settled.length < SETTLE_BATCH) return;
    }
  }

  /**
   * Claims due alerts up to the free slots, oldest first, skipping those whose host already has
   * `maxPerHost` deliveries open (they wait for the next poll), so a host that hangs every attempt
   * until the deadline holds at most that many slots and every other tenant's alerts still go out.
   * The scan reads without locking; only the alerts taken are locked, and one another replica holds
   * or has just claimed is skipped.
   */
  private async claimAndSend(): Promise<void> {
    const capacity = (this.options.maxInFlight ?? 16) - this.inFlight.size;
    if (capacity <= 0) return;
    const maxPerHost = this.options.maxPerHost ?? Math.max(1, Math.floor((this.options.maxInFlight ?? 16) / 2));
    const claimMs = this.options.timeoutMs + 30_000;
    const due = await this.options.db.query<{ id: bigint; webhook: string | null }>(
      `SELECT a.id, t.slack_webhook_url AS webhook FROM alerts a JOIN tenants t ON t.name = a.tenant
       WHERE a.status = 'pending' AND a.next_attempt_at <= now()
       ORDER BY a.next_attempt_at, a.id LIMIT $1`,
      [CLAIM_SCAN],
    );
    const taking = new Map<string, number>();
    const ids: string[] = [];
    for (const alert of due) {
      if (ids.length >= capacity) break;
      const host = hostOf(alert.webhook ?? this.options.globalWebhookUrl);
      const open = (this.perHost.get(host) ?? 0) + (taking.get(host) ?? 0);
      if (open >= maxPerHost) continue;
      taking.set(host, (taking.get(host) ?? 0) + 1);
      ids.push(alert.id.toString());
    }
    if (ids.length === 0) return;
    // Due and pending are checked again on the locked row: an alert claimed since the scan has moved on.
    const claimed = await this.options.db.query<ClaimedAlert>(
      `UPDATE alerts a SET attempts = a.attempts + 1, next_attempt_at = now() + $2::int * interval '1 millisecond'
       FROM tenants t
       WHERE t.name = a.tenant AND a.id IN (
         SELECT id FROM alerts
         WHERE id IN (SELECT value::bigint FROM jsonb_array_elements_text($1::jsonb))
           AND status = 'pending' AND next_attempt_at <= now()
         ORDER BY id FOR UPDATE SKIP LOCKED)
       RETURNING a.id, a.tenant, a.period_start, a.threshold, a.used_tokens, a.quota, a.attempts, a.created_at,
                 t.slack_webhook_url AS webhook, t.time_zone`,
      [JSON.stringify(ids), claimMs],
    );
    const claimedUntil = Date.now() + claimMs;
    for (const alert of claimed) {
      const host = hostOf(alert.webhook ?? this.options.globalWebhookUrl);
      this.perHost.set(host, (this.perHost.get(host) ?? 0) + 1);
      const sending: Promise<void> = this.send(alert, claimedUntil)
        .catch((error: Error) =>
          this.options.logger.error({ err: error.message, alert: alert.id.toString() }, 'alert delivery bookkeeping failed'),
        )
        .finally(() => {
          this.inFlight.delete(sending);
          const left = (this.perHost.get(host) ?? 1) - 1;
          if (left > 0) this.perHost.set(host, left);
          else this.perHost.delete(host);
          // A slot is free: alerts held back by the per-host cap need not wait for the next poll.
          this.wake?.();
        });
      this.inFlight.add(sending);
    }
  }

  /**
   * Records a delivery outcome. Each mark sets fixed values, so repeating one whose answer was lost
   * is harmless; it is retried while the claim holds, because a delivered alert left unmarked would
   * be claimed again and posted twice.
   */
  private mark(text: string, params: readonly unknown[], claimedUntil: number): Promise<unknown> {
    return retryUntilDone('recording an alert delivery', this.options.logger, () => this.options.db.query(text, params), {
      attemptTimeoutMs: 10_000,
      cancelled: () => Date.now() > claimedUntil,
    });
  }

  private async send(alert: ClaimedAlert, claimedUntil: number): Promise<void> {
    const { policy, logger } = this.options;
    const url = alert.webhook ?? this.options.globalWebhookUrl;
    const log = { alert: alert.id.toString(), tenant: alert.tenant, threshold: alert.threshold, attempts: alert.attempts };
    if (!url) {
      await this.mark(
        `UPDATE alerts SET status = 'no_webhook', last_error = 'no webhook configured' WHERE id = $1`,
        [alert.id.toString()],
        claimedUntil,
      );
      return this.outcome('no_webhook', alert.attempts);
    }
    const problem = webhookUrlProblem(url, policy);
    if (problem) {
      await this.mark(
        `UPDATE alerts SET status = 'failed', last_error = $2 WHERE id = $1`,
        [alert.id.toString(), `webhook URL ${problem}`],
        claimedUntil,
      );
      logger.warn(log, 'alert not sent: webhook URL refused');
      return this.outcome('failed', alert.attempts);
    }
    let error: string;
    let delayMs: number | undefined;
    try {
      const response = await postWebhook(url, slackMessage(alert, this.options.publicUrl), policy, this.options.timeoutMs);
      if (response.status >= 200 && response.status < 300) {
        await this.mark(
          `UPDATE alerts SET status = 'delivered', delivered_at = now(), last_error = NULL WHERE id = $1`,
          [alert.id.toString()],
          claimedUntil,
        );
        logger.info(log, 'alert delivered');
        return this.outcome('delivered', alert.attempts);
      }
      error = `HTTP ${response.status}${response.body ? `: ${storableText(response.body.slice(0, 200))}` : ''}`;
      if (response.status === 429) delayMs = retryAfterMs(response.retryAfter);
    } catch (failure) {
      error = storableText((failure as Error).message);
    }
    const backoff = Math.min(MAX_BACKOFF_MS, this.options.retryBaseMs * 2 ** (alert.attempts - 1));
    // Retry-After is a floor, never a shortcut: "0" or a past date must not skip the backoff (it
    // re-posted ~100 times a second for as long as the webhook kept answering so).
    const wait = Math.max(delayMs ?? 0, Math.round(backoff * (0.8 + Math.random() * 0.4)));
    if (Date.now() + wait - new Date(alert.created_at).getTime() > this.options.giveUpMs) {
      await this.mark(
        `UPDATE alerts SET status = 'failed', last_error = $2 WHERE id = $1`,
        [alert.id.toString(), `gave up: ${error}`],
        claimedUntil,
      );
      logger.warn({ ...log, error }, 'alert delivery given up');
      return this.outcome('failed', alert.attempts);
    }
    await this.mark(
      `UPDATE alerts SET last_error = $2, next_attempt_at = now() + $3::int * interval '1 millisecond' WHERE id = $1`,
      [alert.id.toString(), error, wait],
      claimedUntil,
    );
    logger.warn({ ...log, error, retryInMs: wait }, 'alert delivery failed; will retry');
    return this.outcome(delayMs === undefined ? 'retry' : 'rate_limited', alert.attempts);
  }

  private outcome(outcome: DeliveryOutcome, attempts: number): void {
    this.options.onOutcome?.(outcome, attempts);
  }
}
