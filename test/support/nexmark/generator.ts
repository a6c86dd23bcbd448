// A seeded Nexmark event generator: persons, auctions and bids in the event model of the Nexmark benchmark's
// Flink generator (nexmark/nexmark, nexmark-flink/.../generator), written anew in TypeScript. What is kept from
// that model: the kind of an event follows from its event number (person:auction:bid = 1:3:46 by default), ids
// are dense and follow from the event number too (persons and auctions from 1000), a bid or auction refers to a
// recent person or auction (mostly a "hot" one, the first of the current block of 100), a few ids ahead of the
// last generated one may be referred to (ids "in the lead"), 5 categories from 10, prices log-uniform from $1
// to $1M in cents, auctions that expire after about twice the time it takes to create numInFlightAuctions more,
// the same US states, cities and names, bid channels (four hot ones, 10,000 others with their own URLs, most of
// which carry a channel_id parameter) and event times that advance by a fixed inter-event delay from a base
// time. What is not kept: Java's random sequence (randomness comes from the seeded mulberry32 of ../prng.ts, one
// stream per generator, drawn in event order, so a seed gives the same events on every machine), the
// out-of-order groups and rate shapes of the Java generator (event times here never go back), and its sizing
// of `extra` (see NexmarkConfig).
import { prng } from "../prng.ts";

export interface Person {
  id: number;
  name: string;
  emailAddress: string;
  creditCard: string;
  city: string;
  state: string;
  /** event time, epoch ms */
  dateTime: number;
  extra: string;
}

export interface Auction {
  id: number;
  itemName: string;
  description: string;
  /** cents */
  initialBid: number;
  /** cents, above initialBid */
  reserve: number;
  /** event time, epoch ms */
  dateTime: number;
  /** epoch ms, after dateTime */
  expires: number;
  /** a person's id */
  seller: number;
  category: number;
  extra: string;
}

export interface Bid {
  /** an auction's id */
  auction: number;
  /** a person's id */
  bidder: number;
  /** cents */
  price: number;
  channel: string;
  url: string;
  /** event time, epoch ms */
  dateTime: number;
  extra: string;
}

export type NexmarkEvent = { kind: "person"; person: Person } | { kind: "auction"; auction: Auction } | { kind: "bid"; bid: Bid };
export type EventKind = NexmarkEvent["kind"];

export interface NexmarkDataSet {
  persons: Person[];
  auctions: Auction[];
  bids: Bid[];
}

export interface NexmarkConfig {
  /** seeds the PRNG; taken as an unsigned 32-bit integer, as ../prng.ts does */
  seed: number;
  /** how many events to generate */
  events: number;
  /** event time of the first event, epoch ms; DEFAULT_BASE_TIME by default */
  baseTime?: number;
  /** events per second of event time (a positive integer); 10,000 by default, so 1M events span 100 s */
  eventsPerSecond?: number;
  /** out of every personProportion + auctionProportion + bidProportion events, this many are persons (1) */
  personProportion?: number;
  /** ... this many auctions (3) */
  auctionProportion?: number;
  /** ... and this many bids (46) */
  bidProportion?: number;
  /** categories are FIRST_CATEGORY_ID .. FIRST_CATEGORY_ID + numCategories - 1 (5, as in the Java generator) */
  numCategories?: number;
  /** a cold bid is for one of the last numInFlightAuctions + 1 auctions or of the next AUCTION_ID_LEAD; 100 by default */
  numInFlightAuctions?: number;
  /** a cold seller or bidder is one of the last numActivePeople persons or of the next PERSON_ID_LEAD; 1000 by default */
  numActivePeople?: number;
  /** a bid is for the hot auction with probability 1 - 1/hotAuctionRatio (2) */
  hotAuctionRatio?: number;
  /** an auction is by the hot seller with probability 1 - 1/hotSellersRatio (4) */
  hotSellersRatio?: number;
  /** a bid is by the hot bidder with probability 1 - 1/hotBiddersRatio (4) */
  hotBiddersRatio?: number;
  /**
   * Average length of `extra`, in characters, for persons, auctions and bids (16, 16 and 8 by default); a record's
   * extra is within ±20% of it, lowercase letters. The Java generator pads each record to an average byte size
   * (person 200, auction 500, bid 100, of which `extra` is about 140, 390 and 68 characters), which makes an
   * auction about 600 bytes of JSON. Here the records are meant to be written to Kafka as JSON, and a bid
   * without extra is already about 175 bytes of JSON on average (its URL alone is 50 to 80 characters), so the
   * defaults keep a little padding: the average bid is near 185 bytes, a person 180, an auction 245. Pass 0 for
   * no padding, or the Java values above.
   */
  personExtraLength?: number;
  auctionExtraLength?: number;
  bidExtraLength?: number;
}

export type ResolvedNexmarkConfig = Required<NexmarkConfig>;

export const FIRST_PERSON_ID = 1000;
export const FIRST_AUCTION_ID = 1000;
export const FIRST_CATEGORY_ID = 10;
/** How far beyond the last generated person or auction a reference may go. */
export const PERSON_ID_LEAD = 10;
export const AUCTION_ID_LEAD = 10;
/** The hot seller, bidder and auction are the first (bidder: second) of the current block of this many ids. */
export const HOT_BLOCK = 100;
/**
 * 2025-01-01T23:59:55Z: five seconds before midnight UTC, so that from 50,000 events on (at 10,000 events/s) the
 * data spans two days, which the per-day queries (q15-q17) should see. Midnight is a multiple of 10 s, so the
 * first 10 s tumbling window holds the first 5 s only. Kafka deletes records by their timestamp: if the records
 * are written with dateTime as their Kafka timestamp, pass a baseTime near now, or retention may drop them.
 */
export const DEFAULT_BASE_TIME = Date.UTC(2025, 0, 1, 23, 59, 55);

export const US_STATES: readonly string[] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
export const US_CITIES: readonly string[] = ["Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent", "Cheyenne"];
export const FIRST_NAMES: readonly string[] = ["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"];
export const LAST_NAMES: readonly string[] = ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"];
/** The hot channels; q21 maps them (lower-cased) to channel ids apple 0, google 1, facebook 2, baidu 3. */
export const HOT_CHANNELS: readonly string[] = ["Google", "Facebook", "Baidu", "Apple"];
/** The other channels are "channel-0" .. "channel-9999". */
export const CHANNELS_NUMBER = 10_000;

const DEFAULTS: Omit<ResolvedNexmarkConfig, "seed" | "events"> = {
  baseTime: DEFAULT_BASE_TIME,
  eventsPerSecond: 10_000,
  personProportion: 1,
  auctionProportion: 3,
  bidProportion: 46,
  numCategories: 5,
  numInFlightAuctions: 100,
  numActivePeople: 1000,
  hotAuctionRatio: 2,
  hotSellersRatio: 4,
  hotBiddersRatio: 4,
  personExtraLength: 16,
  auctionExtraLength: 16,
  bidExtraLength: 8,
};

/** The config with its defaults filled in, checked. */
export function resolveConfig(cfg: NexmarkConfig): ResolvedNexmarkConfig {
  const c: ResolvedNexmarkConfig = { ...DEFAULTS, ...dropUndefined(cfg) } as ResolvedNexmarkConfig;
  const int = (name: keyof ResolvedNexmarkConfig, min: number) => {
    const v = c[name];
    if (!Number.isSafeInteger(v) || v < min) throw new RangeError(`nexmark: ${name} must be an integer >= ${min}, not ${v}`);
  };
  int("seed", Number.MIN_SAFE_INTEGER);
  int("events", 0);
  int("baseTime", Number.MIN_SAFE_INTEGER);
  int("eventsPerSecond", 1);
  int("personProportion", 1);
  int("auctionProportion", 1);
  int("bidProportion", 0);
  for (const n of ["numCategories", "numInFlightAuctions", "numActivePeople", "hotAuctionRatio", "hotSellersRatio", "hotBiddersRatio"] as const) int(n, 1);
  for (const n of ["personExtraLength", "auctionExtraLength", "bidExtraLength"] as const) int(n, 0);
  if (!Number.isSafeInteger(c.baseTime + timeOffset(c, c.events) + 2 * timeOffset(c, auctionHorizonEvents(c))))
    throw new RangeError("nexmark: event times would not be safe integers");
  return c;
}

function dropUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** floor(a / b) for safe integers a and b > 0, exact (a float division alone can round up to the next integer). */
export function floorDiv(a: number, b: number): number {
  let q = Math.floor(a / b);
  if (q * b > a) q -= 1;
  else if ((q + 1) * b <= a) q += 1;
  return q;
}

function timeOffset(c: ResolvedNexmarkConfig, eventNumber: number): number {
  return floorDiv(eventNumber * 1000, c.eventsPerSecond);
}

/** Event time of event number n (from 0): baseTime + floor(n * 1000 / eventsPerSecond). */
export function eventTime(c: ResolvedNexmarkConfig, n: number): number {
  return c.baseTime + timeOffset(c, n);
}

/** The kind of event number n: the first personProportion of every cycle of events are persons, then auctions, then bids. */
export function eventKind(c: ResolvedNexmarkConfig, n: number): EventKind {
  const offset = n % (c.personProportion + c.auctionProportion + c.bidProportion);
  if (offset < c.personProportion) return "person";
  if (offset < c.personProportion + c.auctionProportion) return "auction";
  return "bid";
}

/** The id (from 0) of the last person generated at or before event number n: the current one if n is a person. */
export function lastBase0PersonId(c: ResolvedNexmarkConfig, n: number): number {
  const total = c.personProportion + c.auctionProportion + c.bidProportion;
  const cycle = Math.floor(n / total);
  const offset = Math.min(n % total, c.personProportion - 1);
  return cycle * c.personProportion + offset;
}

/** The id (from 0) of the last auction generated at or before event number n (-1 before the first one). */
export function lastBase0AuctionId(c: ResolvedNexmarkConfig, n: number): number {
  const total = c.personProportion + c.auctionProportion + c.bidProportion;
  let cycle = Math.floor(n / total);
  let offset = n % total;
  if (offset < c.personProportion) {
    cycle -= 1; // a person: the last auction is that of the previous cycle
    offset = c.auctionProportion - 1;
  } else if (offset >= c.personProportion + c.auctionProportion) {
    offset = c.auctionProportion - 1; // a bid: the last auction of this cycle
  } else {
    offset -= c.personProportion;
  }
  return cycle * c.auctionProportion + offset;
}

/** How many events it takes to create numInFlightAuctions auctions: an auction lasts up to twice their time. */
function auctionHorizonEvents(c: ResolvedNexmarkConfig): number {
  return floorDiv(c.numInFlightAuctions * (c.personProportion + c.auctionProportion + c.bidProportion), c.auctionProportion);
}

const LETTERS = "abcdefghijklmnopqrstuvwxyz";
/** Random extra text is cut from one pool of random letters per generator. */
const EXTRA_POOL_LENGTH = 1 << 16;
let creditCardGroups: string[] | undefined;

/** Makes events in event-number order; the random draws depend on that order. */
class EventMaker {
  private readonly c: ResolvedNexmarkConfig;
  private readonly rnd: () => number;
  private readonly extraPool: string;
  private readonly hotUrls: string[];
  private readonly channelNames: string[];
  private readonly channelUrls: string[];
  private readonly horizonEvents: number;
  private readonly cards: string[];

  constructor(c: ResolvedNexmarkConfig) {
    this.c = c;
    this.rnd = prng(c.seed);
    this.horizonEvents = auctionHorizonEvents(c);
    // The pool of extra letters, the hot channels' URLs and the other channels' URLs come first from the stream.
    const pool: string[] = [];
    while (pool.length < EXTRA_POOL_LENGTH) pool.push(LETTERS[this.int(26)] as string);
    this.extraPool = pool.join("");
    this.hotUrls = HOT_CHANNELS.map(() => this.baseUrl());
    this.channelNames = [];
    this.channelUrls = [];
    for (let i = 0; i < CHANNELS_NUMBER; i++) {
      let url = this.baseUrl();
      // As in the Java model, 9 in 10 of these URLs name their channel's id: its index with its 32 bits reversed,
      // made positive with Java's Math.abs, which leaves -2^31 (channel-1's) negative.
      if (this.int(10) > 0) url += `&channel_id=${javaAbs(reverseBits32(i))}`;
      this.channelNames.push(`channel-${i}`);
      this.channelUrls.push(url);
    }
    if (creditCardGroups === undefined) creditCardGroups = Array.from({ length: 10_000 }, (_, i) => String(i).padStart(4, "0"));
    this.cards = creditCardGroups;
  }

  /** A uniform integer in [0, n), n <= 2^32. */
  private int(n: number): number {
    return Math.floor(this.rnd() * n);
  }

  /** 3 to maxLength - 1 characters, each a letter or, one time in 13, `special`; trimmed of spaces. */
  private string(maxLength: number, special = " "): string {
    let len = 3 + this.int(maxLength - 3);
    let s = "";
    while (len-- > 0) {
      const x = this.int(13 * 26);
      s += x < 26 ? special : LETTERS[x % 26];
    }
    return s.trim();
  }

  /** Cents: 10^(6 u) dollars for a uniform u, so from $1 to $1M, each decade as likely. */
  private price(): number {
    return Math.round(10 ** (this.rnd() * 6) * 100);
  }

  /** Within ±20% of avg letters (avg - d .. avg + d - 1, d = round(avg / 5)), as the Java model sizes it. */
  private extra(avg: number): string {
    if (avg <= 0) return "";
    const delta = Math.round(avg * 0.2);
    const size = avg - delta + (delta === 0 ? 0 : this.int(2 * delta));
    if (size * 2 > this.extraPool.length) {
      let s = "";
      for (let i = 0; i < size; i++) s += LETTERS[this.int(26)];
      return s;
    }
    const at = this.int(this.extraPool.length - size);
    return this.extraPool.substring(at, at + size);
  }

  private baseUrl(): string {
    return `https://www.nexmark.com/${this.string(5, "_")}/${this.string(5, "_")}/${this.string(5, "_")}/item.htm?query=1`;
  }

  /** A recent person (from 0): one of the last numActivePeople or one of the next PERSON_ID_LEAD. */
  private base0PersonId(n: number): number {
    const numPeople = lastBase0PersonId(this.c, n) + 1;
    const active = Math.min(numPeople, this.c.numActivePeople);
    return numPeople - active + this.int(active + PERSON_ID_LEAD);
  }

  /** A recent auction (from 0): one of the last numInFlightAuctions + 1 or one of the next AUCTION_ID_LEAD. */
  private base0AuctionId(n: number): number {
    const last = lastBase0AuctionId(this.c, n);
    const min = Math.max(last - this.c.numInFlightAuctions, 0);
    return min + this.int(last - min + 1 + AUCTION_ID_LEAD);
  }

  event(n: number): NexmarkEvent {
    const kind = eventKind(this.c, n);
    const ts = eventTime(this.c, n);
    if (kind === "person") return { kind, person: this.person(n, ts) };
    if (kind === "auction") return { kind, auction: this.auction(n, ts) };
    return { kind, bid: this.bid(n, ts) };
  }

  private person(n: number, ts: number): Person {
    const c = this.c;
    const cards = this.cards;
    return {
      id: FIRST_PERSON_ID + lastBase0PersonId(c, n),
      name: `${FIRST_NAMES[this.int(FIRST_NAMES.length)]} ${LAST_NAMES[this.int(LAST_NAMES.length)]}`,
      emailAddress: `${this.string(7)}@${this.string(5)}.com`,
      creditCard: `${cards[this.int(10_000)]} ${cards[this.int(10_000)]} ${cards[this.int(10_000)]} ${cards[this.int(10_000)]}`,
      city: US_CITIES[this.int(US_CITIES.length)] as string,
      state: US_STATES[this.int(US_STATES.length)] as string,
      dateTime: ts,
      extra: this.extra(c.personExtraLength),
    };
  }

  private auction(n: number, ts: number): Auction {
    const c = this.c;
    const id = FIRST_AUCTION_ID + lastBase0AuctionId(c, n);
    const seller = FIRST_PERSON_ID + (this.int(c.hotSellersRatio) > 0 ? Math.floor(lastBase0PersonId(c, n) / HOT_BLOCK) * HOT_BLOCK : this.base0PersonId(n));
    const category = FIRST_CATEGORY_ID + this.int(c.numCategories);
    const initialBid = this.price();
    // Lasts 1 ms to twice the time numInFlightAuctions more auctions take to come (about 1-333 ms by default).
    const horizonMs = eventTime(c, n + this.horizonEvents) - ts;
    const expires = ts + 1 + this.int(Math.max(horizonMs * 2, 1));
    const itemName = this.string(20);
    const description = this.string(100);
    const reserve = initialBid + this.price();
    return { id, itemName, description, initialBid, reserve, dateTime: ts, expires, seller, category, extra: this.extra(c.auctionExtraLength) };
  }

  private bid(n: number, ts: number): Bid {
    const c = this.c;
    const auction =
      FIRST_AUCTION_ID + (this.int(c.hotAuctionRatio) > 0 ? Math.floor(lastBase0AuctionId(c, n) / HOT_BLOCK) * HOT_BLOCK : this.base0AuctionId(n));
    // The hot bidder is the second of the block, so that hot bidders and hot sellers differ. (The Java model
    // adds FIRST_PERSON_ID to a bidder twice, which makes its bidders 1000 persons ahead of everyone; not here.)
    const bidder =
      FIRST_PERSON_ID + (this.int(c.hotBiddersRatio) > 0 ? Math.floor(lastBase0PersonId(c, n) / HOT_BLOCK) * HOT_BLOCK + 1 : this.base0PersonId(n));
    const price = this.price();
    let channel: string;
    let url: string;
    if (this.int(2) > 0) {
      const i = this.int(HOT_CHANNELS.length);
      channel = HOT_CHANNELS[i] as string;
      url = this.hotUrls[i] as string;
    } else {
      const i = this.int(CHANNELS_NUMBER);
      channel = this.channelNames[i] as string;
      url = this.channelUrls[i] as string;
    }
    return { auction, bidder, price, channel, url, dateTime: ts, extra: this.extra(c.bidExtraLength) };
  }
}

function reverseBits32(x: number): number {
  let r = 0;
  for (let i = 0; i < 32; i++) {
    r = (r << 1) | (x & 1);
    x >>>= 1;
  }
  return r | 0;
}

function javaAbs(x: number): number {
  return x === -2147483648 ? x : Math.abs(x);
}

/** The events, in event-number order (so in event-time order). */
export function* nexmarkEvents(cfg: NexmarkConfig): Generator<NexmarkEvent> {
  const c = resolveConfig(cfg);
  const maker = new EventMaker(c);
  for (let n = 0; n < c.events; n++) yield maker.event(n);
}

/** The events split by kind, each list in event-number order: what goes to the persons, auctions and bids topics. */
export function nexmarkDataSet(cfg: NexmarkConfig): NexmarkDataSet {
  const c = resolveConfig(cfg);
  const maker = new EventMaker(c);
  const out: NexmarkDataSet = { persons: [], auctions: [], bids: [] };
  for (let n = 0; n < c.events; n++) {
    const e = maker.event(n);
    if (e.kind === "person") out.persons.push(e.person);
    else if (e.kind === "auction") out.auctions.push(e.auction);
    else out.bids.push(e.bid);
  }
  return out;
}
