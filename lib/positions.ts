import type { InboxPosition } from '../db/events.js'
import { apiError } from './api-error.js'

// Cursors are opaque to clients; inside they are a position "<txid>.<seq>", base64url-encoded.
export const encodeCursor = (position: InboxPosition) => Buffer.from(`${position.txid}.${position.seq}`).toString('base64url')

/** Before every event. */
export const START: InboxPosition = { txid: '0', seq: '0' }
const MAX_TXID = 2n ** 64n - 1n
const MAX_SEQ = 2n ** 63n - 1n

/** The position a cursor names; undefined when it is not one. */
export function parseCursor (cursor: string): InboxPosition | undefined {
  const text = Buffer.from(cursor, 'base64url').toString()
  // Node's decoder skips characters outside the alphabet and takes padding or standard base64: only the one
  // spelling this API hands out is a cursor, so a mangled copy is refused rather than read as some position.
  if (Buffer.from(text).toString('base64url') !== cursor) return undefined
  const match = /^(?:(\d{1,20})\.)?(\d{1,19})$/.exec(text)
  // A bare seq is a cursor from before cursors held the transaction id: every event of that time has txid 0.
  const txid = match?.[1] ?? '0'
  const seq = match?.[2]
  if (seq === undefined || BigInt(txid) > MAX_TXID || BigInt(seq) > MAX_SEQ) return undefined
  return { txid: BigInt(txid).toString(), seq: BigInt(seq).toString() }
}

/** A stream's Last-Event-ID or `after`: a cursor, or the client's error naming where it came from. */
function streamCursor (value: string, where: string): InboxPosition {
  const position = parseCursor(value)
  if (position === undefined) throw apiError('badRequest', 'invalid_cursor', `${where} is not an id of this stream or a cursor from this API`)
  return position
}

/**
 * Where a reconnecting stream resumes: after the Last-Event-ID it sends, else after its `?after` cursor; undefined
 * when it gives neither (the stream then starts where its kind starts).
 */
export function streamResumePosition (lastEventId: string | undefined, after: string | undefined): InboxPosition | undefined {
  if (lastEventId !== undefined) return streamCursor(lastEventId, 'Last-Event-ID')
  return after === undefined ? undefined : streamCursor(after, 'after')
}

/** A cursor that does not parse or is out of range is the client's error. */
export function decodeCursor (cursor: string | undefined): InboxPosition {
  if (cursor === undefined) return START
  const position = parseCursor(cursor)
  if (position === undefined) throw apiError('badRequest', 'invalid_cursor', 'cursor is not a next_cursor value from this API')
  return position
}

// The instants PostgreSQL's timestamptz and JavaScript's ISO strings both hold (PostgreSQL has no year 0000).
const EARLIEST_INSTANT = Date.parse('0001-01-01T00:00:00Z')
const LATEST_INSTANT = Date.parse('9999-12-31T23:59:59.999Z')

const RFC_3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?(?:[Zz]|[+-](\d{2}):(\d{2}))$/

/**
 * An RFC 3339 date-time as the UTC instant it names; undefined for what PostgreSQL refuses although the date-time
 * format lets it through (year 0000, offsets beyond 15:59, years past 9999 once the offset is applied).
 */
export function parseInstant (text: string): Date | undefined {
  // RFC 3339 exactly: Date.parse alone also takes trailing text, local times, 24:00 and 31 November.
  const fields = RFC_3339.exec(text)?.slice(1).map((field) => Number(field ?? 0))
  if (fields === undefined) return undefined
  const [year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0, offsetHours = 0, offsetMinutes = 0] = fields
  // Day 0 of the next month is the last day of this one.
  const lastDay = new Date(Date.UTC(year, month, 0)).getUTCDate()
  const valid = month >= 1 && month <= 12 && day >= 1 && day <= lastDay && hour <= 23 && minute <= 59 && second <= 59 &&
    offsetHours <= 23 && offsetMinutes <= 59
  if (!valid) return undefined
  const time = Date.parse(text)
  if (Number.isNaN(time) || time < EARLIEST_INSTANT || time > LATEST_INSTANT) return undefined
  return new Date(time)
}
