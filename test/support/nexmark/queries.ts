// Batch (reference) results of Nexmark queries over a whole data set, to compare a streaming pipeline's output
// with. Each function follows nexmark-flink/src/main/resources/queries/qN.sql with the semantics the streaming
// versions implement:
// - event time is `dateTime`; windows are event-time windows aligned to the epoch, [start, end): an event at
//   exactly a window's end is in the next window;
// - a windowed query gives each window's final result (all data read, emitted as the window closes);
// - a query that is not windowed (an aggregation, a top-N, a join) gives its final state: one row per key, the
//   last value its changelog would hold;
// - where the SQL leaves ties or an order undefined, a deterministic tie-break, said in the function's comment.
// Times are epoch ms; days, hours and minutes are those of UTC (the SQL's TIMESTAMP(3) holds the UTC time).
// Strings compare by UTF-16 code units (JavaScript's < ). Rows come in a documented order; to compare with
// rows in another order, sort both with sortedRows.
import { type Auction, type Bid, floorDiv, type Person } from "./generator.ts";

export interface Tables {
  persons: readonly Person[];
  auctions: readonly Auction[];
  bids: readonly Bid[];
}
type Bids = Pick<Tables, "bids">;

/** Tumbling windows (q7, q8) and the hopping window's size (q5): 10 s. */
export const WINDOW_SIZE_MS = 10_000;
/** The hopping window's advance (q5). */
export const HOP_ADVANCE_MS = 2_000;
/** The session gap (q11). */
export const SESSION_GAP_MS = 10_000;
const DAY_MS = 86_400_000;

// ---------------------------------------------------------------------------------------------- helpers

/** The start of the window of `size` ms, aligned to the epoch, that holds t. */
export function windowStart(t: number, size: number): number {
  return floorDiv(t, size) * size;
}

/** 0.908 * price, the SQL's DECIMAL(23, 3), as the double nearest to it: computed exactly as 908 * price / 1000,
 * so that its JSON text is the decimal itself (for |price| < 2^53 / 908). */
export function euros(price: number): number {
  return (908 * price) / 1000;
}

/** a / b rounded toward zero, as Java's long division (Flink's AVG of a BIGINT is a BIGINT, sum / count). */
export function truncDiv(a: number, b: number): number {
  const q = floorDiv(Math.abs(a), Math.abs(b));
  return a < 0 !== b < 0 ? -q : q;
}

const dayNames = new Map<number, string>();
/** DATE_FORMAT(t, 'yyyy-MM-dd'), UTC. */
export function formatDay(t: number): string {
  const day = floorDiv(t, DAY_MS);
  let s = dayNames.get(day);
  if (s === undefined) {
    s = new Date(day * DAY_MS).toISOString().slice(0, 10);
    dayNames.set(day, s);
  }
  return s;
}

/** DATE_FORMAT(t, 'HH:mm'), UTC. */
export function formatMinute(t: number): string {
  const minute = floorDiv(t - floorDiv(t, DAY_MS) * DAY_MS, 60_000);
  return `${String(Math.floor(minute / 60)).padStart(2, "0")}:${String(minute % 60).padStart(2, "0")}`;
}

/** HOUR(t), UTC. */
export function hourOf(t: number): number {
  return floorDiv(t - floorDiv(t, DAY_MS) * DAY_MS, 3_600_000);
}

/** The count_char UDF: how many times `ch` (its first character) occurs in s; 0 for null. */
export function countChar(s: string | null, ch: string): number {
  if (s === null) return 0;
  const c = ch.charCodeAt(0);
  let n = 0;
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) === c) n++;
  return n;
}

function cmp(a: number | string, b: number | string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The canonical order of bids, used to break ties: by dateTime, auction, bidder, price, channel, url, extra. */
export function compareBids(a: Bid, b: Bid): number {
  return (
    a.dateTime - b.dateTime ||
    a.auction - b.auction ||
    a.bidder - b.bidder ||
    a.price - b.price ||
    cmp(a.channel, b.channel) ||
    cmp(a.url, b.url) ||
    cmp(a.extra, b.extra)
  );
}

/** Copies of rows sorted by their JSON with keys in alphabetical order: for comparing row sets in any order. */
export function sortedRows<T extends object>(rows: readonly T[]): T[] {
  const keyed = rows.map((r) => [canonicalJson(r), r] as const);
  keyed.sort((a, b) => cmp(a[0], b[0]));
  return keyed.map(([, r]) => r);
}

function canonicalJson(r: object): string {
  return JSON.stringify(Object.fromEntries(Object.entries(r).sort(([a], [b]) => cmp(a, b))));
}

function groupBy<T, K>(items: readonly T[], key: (t: T) => K): Map<K, T[]> {
  const m = new Map<K, T[]>();
  for (const t of items) {
    const k = key(t);
    const list = m.get(k);
    if (list === undefined) m.set(k, [t]);
    else list.push(t);
  }
  return m;
}

/** The version of a table row valid at time t: the latest with dateTime <= t; equal times, the later in the input. */
function asOf<T extends { dateTime: number }>(versions: readonly T[] | undefined, t: number): T | undefined {
  let found: T | undefined;
  if (versions === undefined) return found;
  for (const v of versions) if (v.dateTime <= t && (found === undefined || v.dateTime >= found.dateTime)) found = v;
  return found;
}

type Rank = 1 | 2 | 3;
/** The price ranks of q15-q17: below $100, below $10,000, the rest. */
function rankOf(price: number): Rank {
  return price < 10_000 ? 1 : price < 1_000_000 ? 2 : 3;
}

// ---------------------------------------------------------------------------------------------- q0, q1, q2

export interface Q0Row {
  auction: number;
  bidder: number;
  price: number;
  dateTime: number;
  extra: string;
}

/** q0, pass-through: every bid, projected to the SQL's columns (auction, bidder, price, dateTime, extra). In bid order. */
export function q0({ bids }: Bids): Q0Row[] {
  return bids.map((b) => ({ auction: b.auction, bidder: b.bidder, price: b.price, dateTime: b.dateTime, extra: b.extra }));
}

export type Q1Row = Q0Row;

/** q1, currency conversion: q0's rows with price in euros, 0.908 * price (see euros). In bid order. */
export function q1({ bids }: Bids): Q1Row[] {
  return bids.map((b) => ({ auction: b.auction, bidder: b.bidder, price: euros(b.price), dateTime: b.dateTime, extra: b.extra }));
}

export interface Q2Row {
  auction: number;
  price: number;
}

/** q2, selection: (auction, price) of the bids with MOD(auction, 123) = 0. In bid order. */
export function q2({ bids }: Bids): Q2Row[] {
  const out: Q2Row[] = [];
  for (const b of bids) if (b.auction % 123 === 0) out.push({ auction: b.auction, price: b.price });
  return out;
}

// ---------------------------------------------------------------------------------------------- q3, q20: joins

export interface Q3Row {
  name: string;
  city: string;
  state: string;
  /** the auction's id */
  id: number;
}

const Q3_STATES = new Set(["OR", "ID", "CA"]);

/**
 * q3, local item suggestion: who sells in category 10 in Oregon, Idaho or California. The SQL is a regular
 * inner join of auction and person on A.seller = P.id, with A.category = 10 and P.state in (OR, ID, CA),
 * selecting P.name, P.city, P.state, A.id. This is that join over all the data: an auction meets every person
 * row with its seller's id, whenever either came (the final state of the regular join). In auction order, then
 * person order. See q3AsOf for the event-time variant.
 */
export function q3({ persons, auctions }: Pick<Tables, "persons" | "auctions">): Q3Row[] {
  const byId = groupBy(persons, (p) => p.id);
  const out: Q3Row[] = [];
  for (const a of auctions) {
    if (a.category !== 10) continue;
    for (const p of byId.get(a.seller) ?? []) if (Q3_STATES.has(p.state)) out.push({ name: p.name, city: p.city, state: p.state, id: a.id });
  }
  return out;
}

/**
 * q3 as a stream-table join on event time: an auction (the stream) meets the version of its seller (the table,
 * keyed by id) valid at the auction's dateTime, i.e. the person row with the latest dateTime <= the auction's
 * (equal times: the later row in the input, the later in its topic). The state filter applies to that version.
 * An auction whose seller has no version by then gives no row, even if the person comes later (in generated
 * data, an auction may name a person up to PERSON_ID_LEAD ids ahead). In auction order.
 */
export function q3AsOf({ persons, auctions }: Pick<Tables, "persons" | "auctions">): Q3Row[] {
  const byId = groupBy(persons, (p) => p.id);
  const out: Q3Row[] = [];
  for (const a of auctions) {
    if (a.category !== 10) continue;
    const p = asOf(byId.get(a.seller), a.dateTime);
    if (p !== undefined && Q3_STATES.has(p.state)) out.push({ name: p.name, city: p.city, state: p.state, id: a.id });
  }
  return out;
}

export interface Q20Row {
  auction: number;
  bidder: number;
  price: number;
  channel: string;
  url: string;
  bid_dateTime: number;
  bid_extra: string;
  itemName: string;
  description: string;
  initialBid: number;
  reserve: number;
  auction_dateTime: number;
  expires: number;
  seller: number;
  category: number;
  auction_extra: string;
}

function q20Row(b: Bid, a: Auction): Q20Row {
  return {
    auction: b.auction,
    bidder: b.bidder,
    price: b.price,
    channel: b.channel,
    url: b.url,
    bid_dateTime: b.dateTime,
    bid_extra: b.extra,
    itemName: a.itemName,
    description: a.description,
    initialBid: a.initialBid,
    reserve: a.reserve,
    auction_dateTime: a.dateTime,
    expires: a.expires,
    seller: a.seller,
    category: a.category,
    auction_extra: a.extra,
  };
}

/**
 * q20, expand bids with their auction's details, for auctions of category 10. The SQL is a regular inner join
 * of bid and auction on B.auction = A.id with A.category = 10, selecting the bid's columns (dateTime and extra
 * as bid_dateTime, bid_extra) and the auction's but id (dateTime and extra as auction_dateTime, auction_extra).
 * This is that join over all the data: a bid meets every auction row with its id, whenever either came (the
 * final state of the regular join). In bid order, then auction order. See q20AsOf for the event-time variant.
 */
export function q20({ auctions, bids }: Pick<Tables, "auctions" | "bids">): Q20Row[] {
  const byId = groupBy(auctions, (a) => a.id);
  const out: Q20Row[] = [];
  for (const b of bids) for (const a of byId.get(b.auction) ?? []) if (a.category === 10) out.push(q20Row(b, a));
  return out;
}

/**
 * q20 as a stream-table join on event time: a bid (the stream) meets the version of its auction (the table,
 * keyed by id) valid at the bid's dateTime, i.e. the auction row with the latest dateTime <= the bid's (equal
 * times: the later row in the input); the category filter applies to that version. A bid whose auction has no
 * version by then gives no row (in generated data, a bid may name an auction up to AUCTION_ID_LEAD ids ahead).
 * In bid order.
 */
export function q20AsOf({ auctions, bids }: Pick<Tables, "auctions" | "bids">): Q20Row[] {
  const byId = groupBy(auctions, (a) => a.id);
  const out: Q20Row[] = [];
  for (const b of bids) {
    const a = asOf(byId.get(b.auction), b.dateTime);
    if (a !== undefined && a.category === 10) out.push(q20Row(b, a));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------- q4, q9: auctions' winning bids

/** The bids of each auction row that count for it: B.auction = A.id and B.dateTime BETWEEN A.dateTime AND A.expires (both ends in). */
function* auctionBids({ auctions, bids }: Pick<Tables, "auctions" | "bids">): Generator<[Auction, Bid]> {
  const byId = groupBy(auctions, (a) => a.id);
  for (const b of bids) for (const a of byId.get(b.auction) ?? []) if (b.dateTime >= a.dateTime && b.dateTime <= a.expires) yield [a, b];
}

export interface Q4Row {
  /** the category (the SQL's sink names it id) */
  id: number;
  /** the average winning price, cents */
  final: number;
}

/**
 * q4, average winning price per category. The SQL: per auction (GROUP BY A.id, A.category) the highest price
 * of its bids with B.dateTime BETWEEN A.dateTime AND A.expires (inclusive at both ends), then per category the
 * AVG of those, which for BIGINT is a BIGINT: sum / count rounded toward zero. Not windowed: the final state,
 * one row per category that has an auction with a bid. By category.
 */
export function q4(data: Pick<Tables, "auctions" | "bids">): Q4Row[] {
  const finals = new Map<string, { category: number; max: number }>();
  for (const [a, b] of auctionBids(data)) {
    const key = `${a.id}/${a.category}`;
    const cur = finals.get(key);
    if (cur === undefined) finals.set(key, { category: a.category, max: b.price });
    else if (b.price > cur.max) cur.max = b.price;
  }
  const perCategory = new Map<number, { sum: number; count: number }>();
  for (const { category, max } of finals.values()) {
    const s = perCategory.get(category);
    if (s === undefined) perCategory.set(category, { sum: max, count: 1 });
    else {
      s.sum += max;
      s.count += 1;
    }
  }
  return [...perCategory].sort(([a], [b]) => a - b).map(([category, { sum, count }]) => ({ id: category, final: truncDiv(sum, count) }));
}

export type Q9Row = Auction & { auction: number; bidder: number; price: number; bid_dateTime: number; bid_extra: string };

/**
 * The winning bid's order in q9: highest price, then earliest dateTime (the SQL's), then the lowest bidder, then
 * the greatest channel, url and extra (examples/nexmark/q9.yaml's `by`: the SQL leaves these ties open).
 */
function q9Better(a: Bid, b: Bid): boolean {
  return (a.price - b.price || b.dateTime - a.dateTime || b.bidder - a.bidder || cmp(a.channel, b.channel) || cmp(a.url, b.url) || cmp(a.extra, b.extra)) > 0;
}

/**
 * q9, winning bids: each auction with its winning bid. The SQL: auction joined with its bids with B.dateTime
 * BETWEEN A.dateTime AND A.expires (inclusive), ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC,
 * B.dateTime ASC) <= 1, selecting A.* and the bid's auction, bidder, price, dateTime (bid_dateTime), extra
 * (bid_extra). Ties of price and dateTime go to the lowest bidder, then the greatest channel, url and extra
 * (q9Better); of auction rows with the same id, to the first in the input. Not windowed: the final state, one
 * row per auction id that has a bid in its time. By auction id.
 */
export function q9(data: Pick<Tables, "auctions" | "bids">): Q9Row[] {
  const best = new Map<number, [Auction, Bid]>();
  for (const [a, b] of auctionBids(data)) {
    const cur = best.get(a.id);
    if (cur === undefined || q9Better(b, cur[1])) best.set(a.id, [a, b]);
  }
  return [...best]
    .sort(([x], [y]) => x - y)
    .map(([, [a, b]]) => ({ ...a, auction: b.auction, bidder: b.bidder, price: b.price, bid_dateTime: b.dateTime, bid_extra: b.extra }));
}

// ---------------------------------------------------------------------------------------------- q5, q7, q8: windows

export interface Q5Row {
  auction: number;
  num: number;
  /** the window, which the SQL joins on but does not select; drop these to compare with the SQL's columns */
  windowStart: number;
  windowEnd: number;
}

/**
 * q5, hot items: per hopping window (size 10 s, advance 2 s) the auctions with the most bids. The SQL counts
 * bids per auction and window, takes each window's MAX of those counts and joins back with num >= maxn, so
 * every auction that ties for the most is a row: no tie-break is needed, all of them are kept. Each window's
 * final result; a bid at t is in the 5 windows with start <= t < start + 10 s. By window, then auction.
 */
export function q5({ bids }: Bids): Q5Row[] {
  const windows = new Map<number, Map<number, number>>();
  for (const b of bids) {
    for (let start = windowStart(b.dateTime, HOP_ADVANCE_MS); start > b.dateTime - WINDOW_SIZE_MS; start -= HOP_ADVANCE_MS) {
      let counts = windows.get(start);
      if (counts === undefined) windows.set(start, (counts = new Map()));
      counts.set(b.auction, (counts.get(b.auction) ?? 0) + 1);
    }
  }
  const out: Q5Row[] = [];
  for (const start of [...windows.keys()].sort((a, b) => a - b)) {
    const counts = windows.get(start) as Map<number, number>;
    let max = 0;
    for (const n of counts.values()) if (n > max) max = n;
    const top = [...counts].filter(([, n]) => n === max).map(([auction]) => auction);
    for (const auction of top.sort((a, b) => a - b)) out.push({ auction, num: max, windowStart: start, windowEnd: start + WINDOW_SIZE_MS });
  }
  return out;
}

export interface Q7Row {
  auction: number;
  bidder: number;
  price: number;
  dateTime: number;
  extra: string;
  /** the window (the SQL's B1.dateTime is its end); drop these to compare with the SQL's columns */
  windowStart: number;
  windowEnd: number;
}

/** q7's order: highest price, then lowest auction, then lowest bidder, then the canonical order. */
function q7Better(a: Bid, b: Bid): boolean {
  return (a.price - b.price || b.auction - a.auction || b.bidder - a.bidder || compareBids(b, a)) > 0;
}

/**
 * q7, highest bid: per tumbling 10 s window, the bid with the highest price. The SQL takes MAX(price) per
 * window and joins bid with it on price and B.dateTime BETWEEN window_end - 10 s AND window_end, which would
 * let a bid at exactly window_end in too, keeps every bid at the max price, and selects B.auction, B.price,
 * B.bidder into columns named auction, bidder, price (swapping the last two). Here: one row per window that has
 * bids, the highest-priced bid of [start, end), ties to the lowest auction id, then the lowest bidder, then the
 * canonical order (earliest dateTime, then channel, url, extra); its fields under their own names. Each
 * window's final result. By window.
 */
export function q7({ bids }: Bids): Q7Row[] {
  const best = new Map<number, Bid>();
  for (const b of bids) {
    const start = windowStart(b.dateTime, WINDOW_SIZE_MS);
    const cur = best.get(start);
    if (cur === undefined || q7Better(b, cur)) best.set(start, b);
  }
  return [...best]
    .sort(([x], [y]) => x - y)
    .map(([start, b]) => ({
      auction: b.auction,
      bidder: b.bidder,
      price: b.price,
      dateTime: b.dateTime,
      extra: b.extra,
      windowStart: start,
      windowEnd: start + WINDOW_SIZE_MS,
    }));
}

export interface Q8Row {
  id: number;
  name: string;
  /** the window's start */
  stime: number;
}

/**
 * q8, monitor new users: persons who created an auction in the same tumbling 10 s window (on event time) that
 * they registered in. The SQL groups persons by (id, name, window) and auctions by (seller, window) and joins
 * them on P.id = A.seller and the same window, so a person is one row per window however many auctions, and a
 * person row's own dateTime decides its window. Each window's final result. By stime, then id, then name.
 */
export function q8({ persons, auctions }: Pick<Tables, "persons" | "auctions">): Q8Row[] {
  const sellers = new Set<string>();
  for (const a of auctions) sellers.add(`${a.seller}/${windowStart(a.dateTime, WINDOW_SIZE_MS)}`);
  const seen = new Set<string>();
  const out: Q8Row[] = [];
  for (const p of persons) {
    const stime = windowStart(p.dateTime, WINDOW_SIZE_MS);
    const key = `${p.id}/${stime}/${p.name}`;
    if (seen.has(key) || !sellers.has(`${p.id}/${stime}`)) continue;
    seen.add(key);
    out.push({ id: p.id, name: p.name, stime });
  }
  return out.sort((a, b) => a.stime - b.stime || a.id - b.id || cmp(a.name, b.name));
}

// ---------------------------------------------------------------------------------------------- q11: sessions

export interface Q11Row {
  bidder: number;
  bid_count: number;
  starttime: number;
  endtime: number;
}

/**
 * q11, user sessions: bids per bidder per session window with a 10 s gap. A session starts at its first bid
 * and ends 10 s after its last (SESSION_END); a bid joins the bidder's session when it comes before the
 * session's end, i.e. less than 10 s after the previous bid, and a bid exactly 10 s after the previous one
 * starts a new session (windows are end-exclusive; Flink's own session merging would join them). Each
 * session's final result. By bidder, then starttime.
 */
export function q11({ bids }: Bids): Q11Row[] {
  const times = new Map<number, number[]>();
  for (const b of bids) {
    const list = times.get(b.bidder);
    if (list === undefined) times.set(b.bidder, [b.dateTime]);
    else list.push(b.dateTime);
  }
  const out: Q11Row[] = [];
  for (const bidder of [...times.keys()].sort((a, b) => a - b)) {
    const ts = (times.get(bidder) as number[]).sort((a, b) => a - b);
    let start = ts[0] as number;
    let last = start;
    let count = 0;
    for (const t of ts) {
      if (t - last >= SESSION_GAP_MS) {
        out.push({ bidder, bid_count: count, starttime: start, endtime: last + SESSION_GAP_MS });
        start = t;
        count = 0;
      }
      last = t;
      count++;
    }
    out.push({ bidder, bid_count: count, starttime: start, endtime: last + SESSION_GAP_MS });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------- q14, q21, q22: projections

export interface Q14Row {
  auction: number;
  bidder: number;
  /** euros, see euros() */
  price: number;
  bidTimeType: "dayTime" | "nightTime" | "otherTime";
  dateTime: number;
  extra: string;
  c_counts: number;
}

/**
 * q14, calculation: the bids with 1,000,000 < 0.908 * price < 50,000,000 (compared exactly: 908 * price
 * against 10^9 and 5 * 10^10), with the price in euros, bidTimeType from the UTC hour of dateTime (8-18
 * dayTime, 0-6 and 20-23 nightTime, 7 and 19 otherTime) and c_counts = count_char(extra, 'c'). In bid order.
 */
export function q14({ bids }: Bids): Q14Row[] {
  const out: Q14Row[] = [];
  for (const b of bids) {
    const scaled = 908 * b.price;
    if (!(scaled > 1_000_000_000 && scaled < 50_000_000_000)) continue;
    const h = hourOf(b.dateTime);
    const bidTimeType = h >= 8 && h <= 18 ? "dayTime" : h <= 6 || h >= 20 ? "nightTime" : "otherTime";
    out.push({
      auction: b.auction,
      bidder: b.bidder,
      price: euros(b.price),
      bidTimeType,
      dateTime: b.dateTime,
      extra: b.extra,
      c_counts: countChar(b.extra, "c"),
    });
  }
  return out;
}

export interface Q21Row {
  auction: number;
  bidder: number;
  price: number;
  channel: string;
  channel_id: string;
}

const HOT_CHANNEL_IDS = new Map([
  ["apple", "0"],
  ["google", "1"],
  ["facebook", "2"],
  ["baidu", "3"],
]);
const CHANNEL_ID = /(&|^)channel_id=([^&]*)/;

/**
 * q21, add channel id: the bids whose lower-cased channel is apple, google, facebook or baidu (ids "0" to "3")
 * or whose url has a channel_id parameter, REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2) (the first match;
 * an empty value counts). In bid order.
 */
export function q21({ bids }: Bids): Q21Row[] {
  const out: Q21Row[] = [];
  for (const b of bids) {
    const id = HOT_CHANNEL_IDS.get(b.channel.toLowerCase()) ?? CHANNEL_ID.exec(b.url)?.[2];
    if (id !== undefined) out.push({ auction: b.auction, bidder: b.bidder, price: b.price, channel: b.channel, channel_id: id });
  }
  return out;
}

export interface Q22Row {
  auction: number;
  bidder: number;
  price: number;
  channel: string;
  dir1: string | null;
  dir2: string | null;
  dir3: string | null;
}

/**
 * q22, get URL directories: every bid with SPLIT_INDEX(url, '/', 3), (.., 4), (.., 5) as dir1-dir3: the
 * pieces (from 0) of url between slashes, empty ones counted, null past the last; for
 * "https://www.nexmark.com/a/b/c/item.htm?query=1", a, b and c. In bid order.
 */
export function q22({ bids }: Bids): Q22Row[] {
  return bids.map((b) => {
    const parts = b.url === "" ? [] : b.url.split("/");
    return { auction: b.auction, bidder: b.bidder, price: b.price, channel: b.channel, dir1: parts[3] ?? null, dir2: parts[4] ?? null, dir3: parts[5] ?? null };
  });
}

// ---------------------------------------------------------------------------------------------- q15, q16, q17: per-day statistics

class DistinctRanks {
  readonly all = new Set<number>();
  readonly byRank = [new Set<number>(), new Set<number>(), new Set<number>()];
  add(v: number, rank: Rank): void {
    this.all.add(v);
    (this.byRank[rank - 1] as Set<number>).add(v);
  }
}

class DayStats {
  total = 0;
  readonly ranks: [number, number, number] = [0, 0, 0];
  readonly bidders = new DistinctRanks();
  readonly auctions = new DistinctRanks();
  add(b: Bid): void {
    const rank = rankOf(b.price);
    this.total++;
    this.ranks[(rank - 1) as 0 | 1 | 2]++;
    this.bidders.add(b.bidder, rank);
    this.auctions.add(b.auction, rank);
  }
  row(): Omit<Q15Row, "day"> {
    const [r1, r2, r3] = this.ranks;
    const [b1, b2, b3] = this.bidders.byRank as [Set<number>, Set<number>, Set<number>];
    const [a1, a2, a3] = this.auctions.byRank as [Set<number>, Set<number>, Set<number>];
    return {
      total_bids: this.total,
      rank1_bids: r1,
      rank2_bids: r2,
      rank3_bids: r3,
      total_bidders: this.bidders.all.size,
      rank1_bidders: b1.size,
      rank2_bidders: b2.size,
      rank3_bidders: b3.size,
      total_auctions: this.auctions.all.size,
      rank1_auctions: a1.size,
      rank2_auctions: a2.size,
      rank3_auctions: a3.size,
    };
  }
}

export interface Q15Row {
  day: string;
  total_bids: number;
  rank1_bids: number;
  rank2_bids: number;
  rank3_bids: number;
  total_bidders: number;
  rank1_bidders: number;
  rank2_bidders: number;
  rank3_bidders: number;
  total_auctions: number;
  rank1_auctions: number;
  rank2_auctions: number;
  rank3_auctions: number;
}

/**
 * q15, bidding statistics per day: per DATE_FORMAT(dateTime, 'yyyy-MM-dd') (UTC) the number of bids, of
 * distinct bidders and of distinct auctions, overall and per price rank (rank 1: price < 10,000 cents, rank 2:
 * < 1,000,000, rank 3: the rest). A GROUP BY, not a window: the final state, one row per day. By day.
 */
export function q15({ bids }: Bids): Q15Row[] {
  const days = new Map<string, DayStats>();
  for (const b of bids) {
    const day = formatDay(b.dateTime);
    let s = days.get(day);
    if (s === undefined) days.set(day, (s = new DayStats()));
    s.add(b);
  }
  return [...days].sort(([a], [b]) => cmp(a, b)).map(([day, s]) => ({ day, ...s.row() }));
}

export type Q16Row = { channel: string; day: string; minute: string } & Omit<Q15Row, "day">;

/**
 * q16, channel statistics per day: q15's statistics per (channel, day), with minute = the greatest
 * DATE_FORMAT(dateTime, 'HH:mm') (UTC) of the group's bids. The final state, one row per (channel, day). By
 * channel, then day.
 */
export function q16({ bids }: Bids): Q16Row[] {
  const groups = new Map<string, { channel: string; day: string; minute: string; stats: DayStats }>();
  for (const b of bids) {
    const day = formatDay(b.dateTime);
    const key = `${b.channel}\u0000${day}`;
    let g = groups.get(key);
    if (g === undefined) groups.set(key, (g = { channel: b.channel, day, minute: "", stats: new DayStats() }));
    const minute = formatMinute(b.dateTime);
    if (minute > g.minute) g.minute = minute;
    g.stats.add(b);
  }
  return [...groups.values()]
    .sort((a, b) => cmp(a.channel, b.channel) || cmp(a.day, b.day))
    .map((g) => ({ channel: g.channel, day: g.day, minute: g.minute, ...g.stats.row() }));
}

export interface Q17Row {
  auction: number;
  day: string;
  total_bids: number;
  rank1_bids: number;
  rank2_bids: number;
  rank3_bids: number;
  min_price: number;
  max_price: number;
  /** AVG of a BIGINT is a BIGINT: sum / count rounded toward zero */
  avg_price: number;
  sum_price: number;
}

/**
 * q17, auction statistics per day: per (auction, DATE_FORMAT(dateTime, 'yyyy-MM-dd')) the number of bids,
 * overall and per price rank (as q15), and min, max, avg (rounded toward zero) and sum of price. The final
 * state, one row per (auction, day). By auction, then day.
 */
export function q17({ bids }: Bids): Q17Row[] {
  const groups = new Map<string, Q17Row>();
  for (const b of bids) {
    const day = formatDay(b.dateTime);
    const key = `${b.auction}/${day}`;
    let g = groups.get(key);
    if (g === undefined) {
      g = {
        auction: b.auction,
        day,
        total_bids: 0,
        rank1_bids: 0,
        rank2_bids: 0,
        rank3_bids: 0,
        min_price: b.price,
        max_price: b.price,
        avg_price: 0,
        sum_price: 0,
      };
      groups.set(key, g);
    }
    g.total_bids++;
    const rank = rankOf(b.price);
    if (rank === 1) g.rank1_bids++;
    else if (rank === 2) g.rank2_bids++;
    else g.rank3_bids++;
    if (b.price < g.min_price) g.min_price = b.price;
    if (b.price > g.max_price) g.max_price = b.price;
    g.sum_price += b.price;
  }
  const out = [...groups.values()];
  for (const g of out) g.avg_price = truncDiv(g.sum_price, g.total_bids);
  return out.sort((a, b) => a.auction - b.auction || cmp(a.day, b.day));
}

// ---------------------------------------------------------------------------------------------- q18, q19: top-N

export type Q18Row = Bid;

/**
 * q18, find last bid: per (bidder, auction) the bid with the latest dateTime (ROW_NUMBER() OVER (PARTITION BY
 * bidder, auction ORDER BY dateTime DESC) <= 1), all of the bid's columns. Ties of dateTime (common: 10 events
 * share a millisecond at the default rate) go to the last bid in compareBids' order, i.e. the highest price,
 * then the greatest channel, url, extra. The final state, one row per (bidder, auction). By bidder, then auction.
 */
export function q18({ bids }: Bids): Q18Row[] {
  const last = new Map<string, Bid>();
  for (const b of bids) {
    const key = `${b.bidder}/${b.auction}`;
    const cur = last.get(key);
    if (cur === undefined || compareBids(b, cur) > 0) last.set(key, b);
  }
  return [...last.values()].sort((a, b) => a.bidder - b.bidder || a.auction - b.auction).map((b) => ({ ...b }));
}

export type Q19Row = Bid & { rank_number: number };

/**
 * q19, auction top-10 price: per auction its 10 highest-priced bids (ROW_NUMBER() OVER (PARTITION BY auction
 * ORDER BY price DESC) <= 10), all of the bid's columns and rank_number 1-10. The SQL leaves ties of price in no
 * order; here they go against compareBids' order: the latest dateTime first, then the highest bidder, then the
 * greatest channel, url, extra (the example's `by` list). The final state: the top 10 once all bids are in (bids
 * that were in the top 10 for a while and left it are not rows). By auction, then rank_number.
 */
export function q19({ bids }: Bids): Q19Row[] {
  const out: Q19Row[] = [];
  const byAuction = groupBy(bids, (b) => b.auction);
  for (const auction of [...byAuction.keys()].sort((a, b) => a - b)) {
    const top = [...(byAuction.get(auction) as Bid[])].sort((a, b) => b.price - a.price || compareBids(b, a)).slice(0, 10);
    top.forEach((b, i) => {
      out.push({ ...b, rank_number: i + 1 });
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------- all of them

/** Every query here by name, each over the whole data set. */
export const nexmarkQueries = {
  q0,
  q1,
  q2,
  q3,
  q3AsOf,
  q4,
  q5,
  q7,
  q8,
  q9,
  q11,
  q14,
  q15,
  q16,
  q17,
  q18,
  q19,
  q20,
  q20AsOf,
  q21,
  q22,
} satisfies Record<string, (data: Tables) => object[]>;
