import t from 'tap'
import { encodeCursor, parseCursor, parseInstant } from '../../lib/positions.js'

t.test('parseInstant takes RFC 3339 date-times and nothing else', async (t) => {
  const accepted: Array<[string, string]> = [
    ['2026-12-05T00:00:00Z', '2026-12-05T00:00:00.000Z'],
    ['2026-12-05t10:20:30.123456z', '2026-12-05T10:20:30.123Z'],
    ['2026-12-05 10:20:30+01:30', '2026-12-05T08:50:30.000Z'],
    ['2024-02-29T00:00:00Z', '2024-02-29T00:00:00.000Z'],
    ['0001-01-01T00:00:00Z', '0001-01-01T00:00:00.000Z'],
    ['2026-12-05T00:00:00+23:59', '2026-12-04T00:01:00.000Z']
  ]
  for (const [text, instant] of accepted) t.equal(parseInstant(text)?.toISOString(), instant, text)
  const refused = [
    '2026-12-05T00:00:00Z\u0000', '2026-12-05 (comment) 00:00', '2026-12-05 12:00 PM', '2026-12-05 Z', '2026-12-05',
    '2026-12-05T00:00:00', '2026-12-05T24:00:00Z', '2026-11-31T00:00:00Z', '2026-02-29T00:00:00Z', '2026-13-01T00:00:00Z',
    '2026-12-05T23:60:00Z', '2026-12-05T23:59:60Z', '2026-12-05T00:00:00+24:00', '0000-01-01T00:00:00Z',
    '9999-12-31T23:59:59-01:00', '+02026-12-05T00:00:00Z', 'yesterday', ''
  ]
  for (const text of refused) t.equal(parseInstant(text), undefined, JSON.stringify(text))
})

t.test('parseCursor takes only the spelling encodeCursor gives, and round-trips every position', async (t) => {
  const positions = [{ txid: '0', seq: '0' }, { txid: '123', seq: '45' }, { txid: '18446744073709551615', seq: '9223372036854775807' }]
  for (const position of positions) t.same(parseCursor(encodeCursor(position)), position, `${position.txid}.${position.seq}`)
  // A cursor from before cursors held the transaction id: a bare seq, read as txid 0.
  t.same(parseCursor(Buffer.from('42').toString('base64url')), { txid: '0', seq: '42' })
  const cursor = encodeCursor({ txid: '123', seq: '45' })
  // Standard base64 pads where base64url does not: the same position, spelled another way.
  const padded = Buffer.from('100.2').toString('base64')
  t.equal(padded, `${encodeCursor({ txid: '100', seq: '2' })}=`, 'the padded control names a real position')
  const mangled = [
    `${cursor}=`, `${cursor}==`, ` ${cursor}`, `${cursor}\n`, `${cursor.slice(0, 2)}!${cursor.slice(2)}`, `${cursor}.`,
    padded, '', '!!!'
  ]
  for (const text of mangled) t.equal(parseCursor(text), undefined, JSON.stringify(text))
})
