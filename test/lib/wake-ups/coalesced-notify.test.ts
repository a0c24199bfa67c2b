import t from 'tap'
import { createCoalescedNotifier } from '../../../lib/wake-ups/coalesced-notify.js'

t.test('announcements made together are sent once, with counts summed per key', async (t) => {
  const sent: Array<Array<[string, number]>> = []
  const notifier = createCoalescedNotifier(async (counts) => { sent.push(counts) }, 10_000, () => t.fail('no error expected'))
  notifier.add('a', 2)
  notifier.add('b', 1)
  notifier.add('a', 3)
  t.same(sent, [], 'nothing goes out before the delay or a flush')
  await notifier.flush()
  t.same(sent, [[['a', 5], ['b', 1]]])
  await notifier.flush()
  t.equal(sent.length, 1, 'an empty flush sends nothing')
})

t.test('after the delay the batch goes out by itself', async (t) => {
  const delivered = new Promise<Array<[string, number]>>((resolve) => {
    const notifier = createCoalescedNotifier(async (counts) => resolve(counts), 5, () => {})
    notifier.add('org', 1)
    notifier.add('org', 1)
  })
  t.same(await delivered, [['org', 2]])
})

t.test('a failed send is reported, not thrown, and later announcements still go out', async (t) => {
  const errors: unknown[] = []
  let attempts = 0
  const notifier = createCoalescedNotifier(async () => {
    attempts++
    if (attempts === 1) throw new Error('database down')
  }, 10_000, (error) => errors.push(error))
  notifier.add('a', 1)
  await notifier.flush()
  notifier.add('a', 1)
  await notifier.flush()
  t.equal(attempts, 2)
  t.equal(errors.length, 1)
  t.match(String(errors[0]), /database down/)
})
