import t from 'tap'
import { EVENTS_CHANNEL } from '../../../db/wake-ups.js'
import { createEventArrivals } from '../../../lib/wake-ups/event-arrivals.js'
import type { NotificationHandler, WakeUpListener } from '../../../lib/wake-ups/listener.js'

/** A listener the test drives: it delivers NOTIFY payloads and (re)connections by hand. */
function fakeListener () {
  const handlers = new Map<string, NotificationHandler>()
  const connectHandlers: Array<() => void> = []
  const listener: WakeUpListener = {
    listen: (channel, handler) => { handlers.set(channel, handler) },
    onConnect: (handler) => { connectHandlers.push(handler) },
    connected: true
  }
  return {
    listener,
    notify: (payload: string) => handlers.get(EVENTS_CHANNEL)?.(payload),
    reconnect: () => { for (const handler of connectHandlers) handler() }
  }
}

const ORG = '00000000-0000-4000-8000-000000000001'
const OTHER = '00000000-0000-4000-8000-000000000002'

t.test('waiting counts each long-poll waiter and each stream subscriber once, and drops them when they end', async (t) => {
  const fake = fakeListener()
  const arrivals = createEventArrivals(fake.listener)
  t.equal(arrivals.waiting, 0)
  const gone = new AbortController()
  const first = arrivals.nextArrival(ORG, 60_000, gone.signal)
  const second = arrivals.nextArrival(OTHER, 60_000, new AbortController().signal)
  t.equal(arrivals.waiting, 2, 'two waiting long polls')
  const heard: number[] = []
  const unsubscribe = arrivals.subscribe(ORG, (count) => heard.push(count))
  t.equal(arrivals.waiting, 3, 'and a stream')

  gone.abort()
  t.equal(await first, false, 'a poll whose client left ends without an arrival')
  t.equal(arrivals.waiting, 2, 'and is no longer counted')

  fake.notify(`${OTHER}:4`)
  t.equal(await second, true, 'an arrival for its organization wakes a poll')
  t.equal(arrivals.waiting, 1, 'the woken poll is no longer counted')
  t.same(heard, [], 'another organization\'s arrival reaches no stream of this one')

  fake.notify(`${ORG}:3`)
  fake.reconnect()
  t.same(heard, [3, 0], 'streams hear the count, and a reconnect (count 0) so that they look again')
  unsubscribe()
  t.equal(arrivals.waiting, 0, 'unsubscribing drops the stream')
})

t.test('a poll times out at its deadline, and closing ends every poll', async (t) => {
  const arrivals = createEventArrivals(fakeListener().listener)
  t.equal(await arrivals.nextArrival(ORG, 1, new AbortController().signal), false, 'the deadline ends it without an arrival')
  t.equal(arrivals.waiting, 0)
  const waiting = [arrivals.nextArrival(ORG, 60_000, new AbortController().signal), arrivals.nextArrival(OTHER, 60_000, new AbortController().signal)]
  t.equal(arrivals.waiting, 2)
  arrivals.close()
  t.same(await Promise.all(waiting), [false, false])
  t.equal(arrivals.waiting, 0)
  t.ok(arrivals.closing.aborted)
  t.equal(await arrivals.nextArrival(ORG, 60_000, new AbortController().signal), false, 'a poll that starts after closing ends at once')
})
