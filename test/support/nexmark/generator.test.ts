import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, test } from "node:test";
import {
  AUCTION_ID_LEAD,
  type Auction,
  type Bid,
  CHANNELS_NUMBER,
  DEFAULT_BASE_TIME,
  FIRST_AUCTION_ID,
  FIRST_CATEGORY_ID,
  FIRST_NAMES,
  FIRST_PERSON_ID,
  HOT_CHANNELS,
  LAST_NAMES,
  type NexmarkEvent,
  nexmarkDataSet,
  nexmarkEvents,
  PERSON_ID_LEAD,
  type Person,
  resolveConfig,
  US_CITIES,
  US_STATES,
} from "./generator.ts";

const N = 100_000;
const events = [...nexmarkEvents({ seed: 1, events: N })];

function payload(e: NexmarkEvent): Person | Auction | Bid {
  return e.kind === "person" ? e.person : e.kind === "auction" ? e.auction : e.bid;
}

describe("nexmark generator", () => {
  test("the same seed gives the same events; another seed, other events", () => {
    assert.deepEqual([...nexmarkEvents({ seed: 1, events: 20_000 })], events.slice(0, 20_000));
    const other = [...nexmarkEvents({ seed: 2, events: 20_000 })];
    assert.notDeepEqual(other, events.slice(0, 20_000));
    assert.deepEqual(
      other.map((e) => e.kind),
      events.slice(0, 20_000).map((e) => e.kind),
      "the kinds follow from the event number only",
    );
    assert.ok(other.filter((e, i) => JSON.stringify(e) === JSON.stringify(events[i])).length < 100, "few events agree by chance");
  });

  test("the events of seed 1 are those of every machine (a digest of the first 100,000)", () => {
    const h = createHash("sha256");
    for (const e of events) h.update(JSON.stringify(e));
    // If this changes, the generator changed: data sets written before no longer match what it makes.
    assert.equal(h.digest("hex"), "99c3825d0566cad350681aa4496c568fef57be86cb45ed50b9dffe1079f4dadc");
  });

  test("person:auction:bid is 1:3:46 in every 50 events: event 50k + 0 a person, + 1 to 3 auctions, the rest bids", () => {
    for (let block = 0; block < N / 50; block++) {
      const kinds = events.slice(block * 50, block * 50 + 50).map((e) => e.kind);
      assert.equal(kinds[0], "person");
      assert.deepEqual(kinds.slice(1, 4), ["auction", "auction", "auction"]);
      assert.ok(kinds.slice(4).every((k) => k === "bid"));
    }
    const d = nexmarkDataSet({ seed: 1, events: 1234 });
    assert.deepEqual([d.persons.length, d.auctions.length, d.bids.length], [25, 75, 1134]);
  });

  test("event times start at the base time, never go back, and advance by 1000 / eventsPerSecond ms an event", () => {
    const times = events.map((e) => payload(e).dateTime);
    assert.equal(times[0], DEFAULT_BASE_TIME);
    for (let i = 1; i < times.length; i++) assert.ok((times[i] as number) >= (times[i - 1] as number));
    // 100,000 events at 10,000/s span 10 s: the last is at 9.9999 s, floor(n * 1000 / rate) ms after the first.
    assert.equal(times.at(-1), DEFAULT_BASE_TIME + 9_999);
    assert.equal(times.filter((t) => t === DEFAULT_BASE_TIME).length, 10, "10 events a millisecond");

    const slow = [...nexmarkEvents({ seed: 1, events: 301, baseTime: 5_000, eventsPerSecond: 3 })].map((e) => payload(e).dateTime);
    assert.equal(slow[0], 5_000);
    assert.equal(slow[1], 5_333);
    assert.equal(slow[3], 6_000);
    assert.equal(slow[300], 5_000 + 100_000, "301 events at 3/s span 100 s");
  });

  test("ids: persons and auctions are numbered from 1000 in order; references point at recent ids or a few ahead", (t) => {
    let lastPerson = FIRST_PERSON_ID - 1;
    let lastAuction = FIRST_AUCTION_ID - 1;
    let ahead = 0;
    let references = 0;
    const c = resolveConfig({ seed: 1, events: N });
    const recentPerson = (id: number) => {
      // one of the last numActivePeople, or at most PERSON_ID_LEAD ahead of the last generated
      assert.ok(id >= Math.max(FIRST_PERSON_ID, lastPerson - c.numActivePeople + 1) && id <= lastPerson + PERSON_ID_LEAD, `person ${id} after ${lastPerson}`);
      references++;
      if (id > lastPerson) ahead++;
    };
    for (const e of events) {
      if (e.kind === "person") {
        assert.equal(e.person.id, ++lastPerson);
      } else if (e.kind === "auction") {
        assert.equal(e.auction.id, ++lastAuction);
        recentPerson(e.auction.seller);
      } else {
        const { auction, bidder } = e.bid;
        assert.ok(
          auction >= Math.max(FIRST_AUCTION_ID, lastAuction - c.numInFlightAuctions) && auction <= lastAuction + AUCTION_ID_LEAD,
          `auction ${auction} after ${lastAuction}`,
        );
        references++;
        if (auction > lastAuction) ahead++;
        recentPerson(bidder);
      }
    }
    // Of the references, some point ahead (the Java model's "leads"): a few per cent, as there.
    t.diagnostic(`${ahead} of ${references} references point ahead of the last generated id`);
    assert.ok(ahead > 0 && ahead < references * 0.05);
    // The hot ones: 1/2 of bids on the first auction of the current block of 100, 3/4 by its second person.
    const bids = events.flatMap((e) => (e.kind === "bid" ? [e.bid] : []));
    const hotAuction = bids.filter((b) => (b.auction - FIRST_AUCTION_ID) % 100 === 0).length / bids.length;
    const hotBidder = bids.filter((b) => (b.bidder - FIRST_PERSON_ID) % 100 === 1).length / bids.length;
    assert.ok(hotAuction > 0.49 && hotAuction < 0.52, `hot auction share ${hotAuction}`);
    assert.ok(hotBidder > 0.74 && hotBidder < 0.77, `hot bidder share ${hotBidder}`);
  });

  test("fields: categories, prices, expiry, strings and channels in the model's ranges; every number a safe integer", () => {
    const c = resolveConfig({ seed: 1, events: N });
    const extraIn = (s: string, avg: number) => s.length >= avg - Math.round(avg / 5) && s.length < avg + Math.round(avg / 5) && /^[a-z]*$/.test(s);
    const categories = new Set<number>();
    const channels = new Set<string>();
    for (const e of events) {
      for (const v of Object.values(payload(e))) if (typeof v === "number") assert.ok(Number.isSafeInteger(v), `${v} in ${JSON.stringify(e)}`);
      if (e.kind === "person") {
        const p = e.person;
        const [first, last] = p.name.split(" ");
        assert.ok(FIRST_NAMES.includes(first as string) && LAST_NAMES.includes(last as string), p.name);
        assert.ok(US_STATES.includes(p.state) && US_CITIES.includes(p.city));
        assert.match(p.creditCard, /^\d{4} \d{4} \d{4} \d{4}$/);
        assert.match(p.emailAddress, /^[a-z ]*@[a-z ]*\.com$/);
        assert.ok(extraIn(p.extra, c.personExtraLength), p.extra);
      } else if (e.kind === "auction") {
        const a = e.auction;
        assert.ok(a.category >= FIRST_CATEGORY_ID && a.category < FIRST_CATEGORY_ID + c.numCategories, `category ${a.category}`);
        categories.add(a.category);
        assert.ok(a.initialBid >= 100 && a.initialBid <= 100_000_000 && a.reserve > a.initialBid);
        assert.ok(a.expires > a.dateTime && a.expires <= a.dateTime + 400, `expires ${a.expires - a.dateTime} ms after`);
        assert.ok(a.itemName.length < 20 && a.description.length < 100);
        assert.ok(extraIn(a.extra, c.auctionExtraLength), a.extra);
      } else {
        const b = e.bid;
        assert.ok(b.price >= 100 && b.price <= 100_000_000, `price ${b.price}`);
        assert.match(b.url, /^https:\/\/www\.nexmark\.com\/[a-z_]{3,4}\/[a-z_]{3,4}\/[a-z_]{3,4}\/item\.htm\?query=1(&channel_id=-?\d+)?$/);
        const i = HOT_CHANNELS.indexOf(b.channel);
        if (i < 0) {
          assert.match(b.channel, /^channel-\d+$/);
          assert.ok(Number(b.channel.slice(8)) < CHANNELS_NUMBER);
        } else assert.ok(!b.url.includes("channel_id"), "a hot channel's URL has no channel_id");
        channels.add(b.channel);
        assert.ok(extraIn(b.extra, c.bidExtraLength), b.extra);
      }
    }
    assert.deepEqual([...categories].sort(), [10, 11, 12, 13, 14]);
    assert.ok(channels.size > 9_000, `${channels.size} channels`);
  });

  test("an event survives a JSON round trip; the average bid is 100-200 bytes of JSON", (t) => {
    for (const e of events.slice(0, 1000)) assert.deepEqual(JSON.parse(JSON.stringify(e)), e);
    const sizes = { person: [0, 0], auction: [0, 0], bid: [0, 0] };
    for (const e of events) {
      const s = sizes[e.kind];
      s[0] = (s[0] as number) + Buffer.byteLength(JSON.stringify(payload(e)));
      s[1] = (s[1] as number) + 1;
    }
    const avg = (k: keyof typeof sizes) => (sizes[k][0] as number) / (sizes[k][1] as number);
    t.diagnostic(`average JSON bytes: person ${avg("person").toFixed(1)}, auction ${avg("auction").toFixed(1)}, bid ${avg("bid").toFixed(1)}`);
    assert.ok(avg("bid") >= 100 && avg("bid") <= 200);
    const bare = nexmarkDataSet({ seed: 1, events: 1000, bidExtraLength: 0, personExtraLength: 0, auctionExtraLength: 0 });
    assert.ok([...bare.bids, ...bare.persons, ...bare.auctions].every((r) => r.extra === ""));
  });

  test("a config out of range is refused", () => {
    assert.throws(() => resolveConfig({ seed: 1, events: -1 }), RangeError);
    assert.throws(() => resolveConfig({ seed: 1, events: 10, eventsPerSecond: 0.5 }), RangeError);
    assert.throws(() => resolveConfig({ seed: 1.5, events: 10 }), RangeError);
    assert.throws(() => resolveConfig({ seed: 1, events: 10, personProportion: 0 }), RangeError);
  });

  test("1M events generate in a couple of seconds", (t) => {
    let start = performance.now();
    let n = 0;
    for (const _ of nexmarkEvents({ seed: 7, events: 1_000_000 })) n++;
    const iterated = performance.now() - start;
    start = performance.now();
    const d = nexmarkDataSet({ seed: 7, events: 1_000_000 });
    const collected = performance.now() - start;
    assert.equal(n, 1_000_000);
    assert.deepEqual([d.persons.length, d.auctions.length, d.bids.length], [20_000, 60_000, 920_000]);
    t.diagnostic(`1M events: ${iterated.toFixed(0)} ms iterated, ${collected.toFixed(0)} ms into a data set`);
  });
});
