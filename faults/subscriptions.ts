import { setTimeout as sleep } from 'node:timers/promises'
import {
  createSubscription, readReplay, readSubscription, sendBatch, startReplay, updateSubscription, type Organization, type ReplayState, type SubscriptionState
} from './api.js'
import { errorMessage, seconds, type Checks } from './checks.js'
import { Consumer } from './consumer.js'
import { eventsOutside, subscriptionEvidence } from './database.js'
import type { InstanceTally, Target } from './load.js'
import { instances, type Context, type PhaseResult, type PhaseSpec } from './phase.js'
import { waitUntil, waitWhileProgressing } from './wait.js'
import { HOOK_EVERY, REQUESTS_PER_SECOND, RUN_ID, TYPES } from './settings.js'

/**
 * Pull subscriptions of the load's organization read through the faults (issue 21): a live one, a backfill
 * from the beginning and a replay, each consumed all run long, and at the end each must have handed out every
 * acknowledged event it should (none lost, none skipped), however often the faults made it hand one out again.
 *
 * - live: `faults.hook.*` (the load's hooked tenth and the webhook probe) and `faults.prep`, from "now", made
 *   before anything is sent;
 * - backfill: everything, from "beginning", made once PREP_EVENTS events exist, and capped at a tenth of the
 *   load's rate: it is still reading those events, older than every phase, when the phases end;
 * - a replay, on live, of the PREP_EVENTS events it has read and acked, running beside its live reading. Live is
 *   capped a little above its own share of the load, so the replay gets what is left: a few events a second under
 *   load, the whole cap between phases or when a busy machine slows the load. Even at the whole cap the range
 *   takes over 2 minutes, longer than the phases take on a busy machine, so it is still running at every fault.
 *
 * After the phases the caps are lifted and both catch up.
 */
const PREP_EVENTS = 6000
const BATCH_SIZE = 100
const BATCHES_AT_ONCE = 4
const LIVE_TYPES = ['faults.hook.*', TYPES.prep]
const LIVE_RATE = Math.ceil(REQUESTS_PER_SECOND / HOOK_EVERY) + 5
const BACKFILL_RATE = 40
/** While capped, a consumer pauses between rounds, so the tokens gather into a few leases a second. */
const CAPPED_PAUSE_MS = 250
/** High enough that no event is dead-lettered by the faults: a dead letter would end its redeliveries. */
const MAX_ATTEMPTS = 1000
const PREP_READ_MS = 30_000
/** After the phases: caught up as long as receptions or the replay progress; stuck after this long without. */
const FINISH_STALL_MS = 30_000
const FINISH_MAX_MS = 120_000
const EVIDENCE = 3

interface Read {
  /** Receptions so far, duplicates included. */
  received: number
  /** Creation time of the newest event received (ms since the epoch). */
  newestCreatedAt: number
}

/** Where the subscriptions stand between phases. */
export interface Progress {
  replay: ReplayState | undefined
  live: Read
  backfill: Read
}

export interface SubscriptionRow {
  name: string
  reads: string
  expected: number
  received: number
  lost: number
  duplicates: number
  /** Received events the load was never told were stored (answer cut off by a fault): allowed, reported. */
  beyond: number
  leasesAndAcks: string
  status503: number
  otherErrors: number
  connectionErrors: string
}

export interface SubscriptionReport {
  rows: SubscriptionRow[]
  notes: string[]
}

interface Subscription {
  id: string
  consumer: Consumer
}

function readOf (consumer: Consumer): Read {
  return { received: consumer.received, newestCreatedAt: consumer.newestCreatedAt }
}

/** Events received more often than `expectedTimes` says (1 unless told), extra receptions counted. */
function duplicates (consumer: Consumer, expectedTimes: (eventId: string) => number = () => 1): number {
  let extra = 0
  for (const [eventId, times] of consumer.receptions) extra += Math.max(0, times - expectedTimes(eventId))
  return extra
}

function sumTallies (consumers: Consumer[], pick: (tally: InstanceTally) => number): number {
  return consumers.reduce((total, consumer) => total + [...consumer.tallies.values()].reduce((sum, tally) => sum + pick(tally), 0), 0)
}

export class SubscriptionReads {
  private liftedAt: number | undefined

  private constructor (
    private readonly context: Context,
    private readonly prepAcked: string[],
    private readonly live: Subscription,
    private readonly backfill: Subscription,
    private readonly replay: { id: string, startedAt: number, total: number }
  ) {}

  /**
   * Before the phases: live made and consuming, PREP_EVENTS sent and all acked by it, then the backfill made and
   * the replay started, both capped. Throws if any step fails: there is no fault yet to excuse it.
   */
  static async start (context: Context): Promise<SubscriptionReads> {
    console.log('\n== subscriptions: live, backfill, replay')
    const { organization } = context
    const [a, b] = instances(context)
    const targets: Target[] = context.cluster.apis.map((api) => ({ label: api.label, baseUrl: api.baseUrl }))
    const liveId = await createSubscription(a.baseUrl, organization, { name: 'faults live', event_types: LIVE_TYPES, start: 'now', max_attempts: MAX_ATTEMPTS })
    const live = new Consumer('live', liveId, organization, targets)
    const prepStartedAt = Date.now()
    const prepAcked = await sendPrep(organization, targets)
    const allRead = await waitUntil(() => live.acknowledged >= prepAcked.length && prepAcked.every((id) => live.receptions.has(id)), PREP_READ_MS)
    if (!allRead) {
      throw new Error(`the live subscription received ${prepAcked.filter((id) => live.receptions.has(id)).length} and acked ${live.acknowledged} ` +
        `of the ${prepAcked.length} events sent before the phases within ${PREP_READ_MS / 1000} s`)
    }
    const backfillId = await createSubscription(b.baseUrl, organization, { name: 'faults backfill', start: 'beginning', max_attempts: MAX_ATTEMPTS, rate_limit_per_second: BACKFILL_RATE })
    const backfill = new Consumer('backfill', backfillId, organization, targets, CAPPED_PAUSE_MS)
    await updateSubscription(a.baseUrl, organization, liveId, { rate_limit_per_second: LIVE_RATE })
    live.pauseMs = CAPPED_PAUSE_MS
    // Every event of the range was acked before this: whatever of it comes again from now on is the replay's.
    const replayStartedAt = Date.now()
    const replay = await startReplay(b.baseUrl, organization, liveId, new Date(prepStartedAt - 1000), new Date())
    console.log(`  subscriptions: ${prepAcked.length} events sent and read by live in ${seconds((replayStartedAt - prepStartedAt) / 1000)} s; ` +
      `backfill from the beginning at ${BACKFILL_RATE}/s, replay of ${replay.total} events on live at ${LIVE_RATE}/s`)
    return new SubscriptionReads(context, prepAcked, { id: liveId, consumer: live }, { id: backfillId, consumer: backfill },
      { id: replay.replay_id, startedAt: replayStartedAt, total: replay.total })
  }

  async progress (): Promise<Progress> {
    return { replay: await this.readReplay(), live: readOf(this.live.consumer), backfill: readOf(this.backfill.consumer) }
  }

  /**
   * The phase's note: how far the replay and the backfill got through it. For the faults of issue 21, a check
   * that both were under way from the phase's start to its end: the replay running at both ends and done
   * growing, the backfill receiving and, at the end, still reading events created before the phase began.
   */
  notePhase (checks: Checks, spec: PhaseSpec, result: PhaseResult, before: Progress, after: Progress): void {
    const replay = `replay done ${before.replay?.done ?? '?'} → ${after.replay?.done ?? '?'} of ${after.replay?.total ?? '?'}, ` +
      `${before.replay?.status ?? 'unreadable'} → ${after.replay?.status ?? 'unreadable'}`
    const backfillReceived = after.backfill.received - before.backfill.received
    const behind = (result.startedAt - after.backfill.newestCreatedAt) / 1000
    const backfill = `backfill received ${backfillReceived}, the newest created ` +
      (behind > 0 ? `${seconds(behind)} s before the phase began` : `${seconds(-behind)} s into the phase`)
    result.notes.push(`subscriptions: ${replay}; ${backfill}; live received ${after.live.received - before.live.received}`)
    if (spec.duringSubscriptionReads !== true) return
    const replayUnderWay = before.replay?.status === 'running' && after.replay?.status === 'running' && after.replay.done > before.replay.done
    const backfillUnderWay = backfillReceived > 0 && behind > 0
    checks.add(result.name, `${result.name}: the replay and the backfill were under way through the fault`, replayUnderWay && backfillUnderWay, `${replay}; ${backfill}`)
  }

  /** After the phases: the caps go, so both catch up while the deliveries settle. */
  async liftCaps (): Promise<void> {
    this.liftedAt = Date.now()
    for (const subscription of [this.live, this.backfill]) {
      await this.onAnyInstance((baseUrl) => updateSubscription(baseUrl, this.context.organization, subscription.id, { rate_limit_per_second: null }))
      subscription.consumer.pauseMs = 0
    }
  }

  /**
   * Waits (while they progress) until each subscription has handed out every acknowledged event it should and the
   * replay has finished, stops the consumers, and judges. Returns the rows and notes of the report.
   */
  async finish (checks: Checks, phases: PhaseResult[]): Promise<SubscriptionReport> {
    const live = this.live.consumer
    const backfill = this.backfill.consumer
    const expectedLive = [...new Set([...this.prepAcked, ...phases.flatMap((phase) => phase.hookedAcked)])]
    const expectedBackfill = [...new Set([...this.prepAcked, ...phases.flatMap((phase) => phase.organizationAcked)])]
    const missing = (consumer: Consumer, expected: string[]) => expected.filter((id) => !consumer.receptions.has(id))
    const replayedAgain = () => this.prepAcked.filter((id) => (live.lastReceivedAt.get(id) ?? 0) >= this.replay.startedAt)
    const caughtUp = (replay: ReplayState | undefined) => replay?.status === 'finished' && replay.done === replay.total &&
      missing(live, expectedLive).length === 0 && missing(backfill, expectedBackfill).length === 0 && replayedAgain().length === this.prepAcked.length
    const waitStarted = Date.now()
    const { ok, stalled, last: replay } = await waitWhileProgressing(() => this.readReplay(), caughtUp,
      (replay) => live.received + backfill.received + (replay?.done ?? 0), FINISH_STALL_MS, FINISH_MAX_MS, 500)
    const waited = (Date.now() - waitStarted) / 1000
    await Promise.all([live.stop(), backfill.stop()])
    const why = ok ? '' : stalled ? ` (nothing received for the last ${FINISH_STALL_MS / 1000} s)` : ' (still progressing, given up)'
    const notes = [`caught up ${seconds(waited)} s after the deliveries settled${why}, ${seconds((Date.now() - (this.liftedAt ?? waitStarted)) / 1000)} s after the caps were lifted`]

    // The replay hands each event of its range out a second time: that one is no duplicate.
    const replayed = new Set(this.prepAcked)
    const liveRow = await this.judge(checks, 'live', `${LIVE_TYPES.map((type) => `\`${type}\``).join(', ')} from now, ${LIVE_RATE}/s`,
      this.live, expectedLive, (id) => replayed.has(id) ? 2 : 1)
    const backfillRow = await this.judge(checks, 'backfill', `everything from the beginning, ${BACKFILL_RATE}/s`, this.backfill, expectedBackfill)

    const again = new Set(replayedAgain())
    const skipped = this.prepAcked.filter((id) => !again.has(id))
    checks.add('final', 'replay on live: every event of its range handed out again (0 skipped)', skipped.length === 0,
      `${this.prepAcked.length} events in the range, ${again.size} handed out again after the replay started, ${skipped.length} not` +
      await this.evidence(this.live.id, skipped))
    const finished = replay?.status === 'finished' && replay.done === replay.total && replay.total === this.prepAcked.length
    checks.add('final', 'replay on live: finished, done == total == the events of its range', finished,
      replay === undefined
        ? 'its progress could not be read'
        : `${replay.status}, done ${replay.done} of ${replay.total} (total ${this.replay.total} when it started; ${this.prepAcked.length} events in its range)`)
    notes.push(`replay ${replay?.status ?? 'unreadable'} with done ${replay?.done ?? '?'} of ${replay?.total ?? '?'}, ${seconds((Date.now() - this.replay.startedAt) / 1000)} s after it started`)

    const consumers = [live, backfill]
    const other5xx = sumTallies(consumers, (tally) => tally.other5xx)
    const otherStatus = sumTallies(consumers, (tally) => tally.otherStatus)
    const samples = consumers.flatMap((consumer) => [...consumer.tallies.values()].flatMap((tally) => tally.samples))
    checks.add('final', 'subscription consumers: no 5xx other than 503, no other error answers (4xx)', other5xx === 0 && otherStatus === 0,
      `${other5xx} 5xx other than 503, ${otherStatus} other non-2xx, ${sumTallies(consumers, (tally) => tally.status503)} answers 503` +
      (samples.length === 0 || (other5xx === 0 && otherStatus === 0) ? '' : `\n      ${samples.join('\n      ')}`))
    return {
      rows: [liveRow, backfillRow, {
        name: 'replay on live',
        reads: `the ${this.prepAcked.length} events sent before the phases, again`,
        expected: this.prepAcked.length,
        received: again.size,
        lost: skipped.length,
        duplicates: 0,
        beyond: 0,
        leasesAndAcks: '(live\'s)',
        status503: 0,
        otherErrors: 0,
        connectionErrors: '(live\'s)'
      }],
      notes
    }
  }

  /** The check that a subscription handed out every acknowledged event it should, and its row of the report. */
  private async judge (checks: Checks, name: string, reads: string, { id, consumer }: Subscription, expected: string[],
    expectedTimes?: (eventId: string) => number): Promise<SubscriptionRow> {
    const expectedSet = new Set(expected)
    const lost = expected.filter((eventId) => !consumer.receptions.has(eventId))
    const beyond = [...consumer.receptions.keys()].filter((eventId) => !expectedSet.has(eventId))
    // Beyond the acknowledged is fine when the load's request was cut off after the event was stored; an event of
    // another organization never is.
    const foreign = beyond.length === 0 ? [] : await eventsOutside(beyond, this.context.organization.id)
    const dup = duplicates(consumer, expectedTimes)
    const state = await this.onAnyInstance((baseUrl) => readSubscription(baseUrl, this.context.organization, id)).catch(() => undefined)
    checks.add('final', `${name} subscription: every acknowledged event it should get was handed out (0 lost)`, lost.length === 0 && foreign.length === 0,
      `${expected.length} acknowledged, ${expected.length - lost.length} received, ${lost.length} never` +
      `; ${dup} duplicates; ${beyond.length} received beyond the acknowledged${foreign.length > 0 ? `, ${foreign.length} of them not the organization's (e.g. ${foreign.slice(0, EVIDENCE).join(', ')})` : ''}` +
      `; acks: ${consumer.acknowledged} acknowledged, ${consumer.notFound} not found, ${consumer.acksGivenUp} leases given up; ${describeState(state)}` +
      await this.evidence(id, lost))
    const tallies = [...consumer.tallies.entries()]
    return {
      name,
      reads,
      expected: expected.length,
      received: expected.length - lost.length,
      lost: lost.length,
      duplicates: dup,
      beyond: beyond.length,
      leasesAndAcks: `${consumer.leases} / ${consumer.acknowledged}`,
      status503: tallies.reduce((total, [, tally]) => total + tally.status503, 0),
      otherErrors: tallies.reduce((total, [, tally]) => total + tally.other5xx + tally.otherStatus, 0),
      connectionErrors: tallies.map(([label, tally]) => `${label} ${tally.connectionErrors + tally.timeouts}`).join(', ')
    }
  }

  private async evidence (subscriptionId: string, eventIds: string[]): Promise<string> {
    if (eventIds.length === 0) return ''
    const lines = await subscriptionEvidence(subscriptionId, eventIds.slice(0, EVIDENCE)).catch((error: unknown) => [`no evidence: ${errorMessage(error)}`])
    return `\n      ${lines.join('\n      ')}`
  }

  /** The replay as the API reports it, from whichever instance answers; undefined if none does. */
  private async readReplay (): Promise<ReplayState | undefined> {
    return await this.onAnyInstance((baseUrl) => readReplay(baseUrl, this.context.organization, this.live.id, this.replay.id)).catch(() => undefined)
  }

  /** A call between phases: on A, else B, a few rounds (an instance may just be back from a fault). */
  private async onAnyInstance<T> (call: (baseUrl: string) => Promise<T>): Promise<T> {
    let failure: unknown
    for (let round = 0; round < 3; round++) {
      for (const api of this.context.cluster.apis) {
        try {
          return await call(api.baseUrl)
        } catch (error) {
          failure = error
        }
      }
      await sleep(500)
    }
    throw failure
  }
}

function describeState (state: SubscriptionState | undefined): string {
  if (state === undefined) return 'its state could not be read'
  const { in_flight: inFlight, available, dead } = state.pending
  return `left ${inFlight} in flight, ${available} available, ${dead} dead-lettered`
}

/** PREP_EVENTS events of a type no webhook takes, in batches alternating between the instances; their ids. */
async function sendPrep (organization: Organization, targets: Target[]): Promise<string[]> {
  const batches = Math.ceil(PREP_EVENTS / BATCH_SIZE)
  const ids: string[][] = []
  let next = 0
  await Promise.all(Array.from({ length: BATCHES_AT_ONCE }, async () => {
    while (next < batches) {
      const batch = next++
      const target = targets[batch % targets.length] as Target
      const size = Math.min(BATCH_SIZE, PREP_EVENTS - batch * BATCH_SIZE)
      ids[batch] = await sendBatch(target.baseUrl, organization,
        Array.from({ length: size }, (_, index) => ({ type: TYPES.prep, dedup_id: `${RUN_ID}-prep-${batch * BATCH_SIZE + index}` })))
    }
  }))
  return ids.flat()
}
