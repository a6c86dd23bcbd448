import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type Auction, type Bid, nexmarkDataSet, type Person } from "./generator.ts";
import {
  euros,
  formatDay,
  formatMinute,
  nexmarkQueries,
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
  sortedRows,
} from "./queries.ts";

/** Midnight UTC: a multiple of every window size here. */
const T0 = Date.UTC(2025, 0, 1);
const URL = "https://www.nexmark.com/a/b/c/item.htm?query=1";

function bid(b: Partial<Bid>): Bid {
  return { auction: 1000, bidder: 1000, price: 100, channel: "Google", url: URL, dateTime: T0, extra: "", ...b };
}
function person(p: Partial<Person>): Person {
  return { id: 1000, name: "Kate Smith", emailAddress: "k@x.com", creditCard: "0000 0000 0000 0000", city: "Bend", state: "OR", dateTime: T0, extra: "", ...p };
}
function auction(a: Partial<Auction>): Auction {
  return {
    id: 1000,
    itemName: "i",
    description: "d",
    initialBid: 100,
    reserve: 200,
    dateTime: T0,
    expires: T0 + 100,
    seller: 1000,
    category: 10,
    extra: "",
    ...a,
  };
}

describe("nexmark batch queries on hand-built data", () => {
  test("q0 passes every bid through in the SQL's columns; q1 converts the price exactly; q2 keeps auctions divisible by 123", () => {
    const bids = [
      bid({ auction: 1107, price: 15, extra: "x" }),
      bid({ auction: 1108, price: 123_456_789, dateTime: T0 + 1 }),
      bid({ auction: 2460, price: 3 }),
    ];
    assert.deepEqual(q0({ bids }), [
      { auction: 1107, bidder: 1000, price: 15, dateTime: T0, extra: "x" },
      { auction: 1108, bidder: 1000, price: 123_456_789, dateTime: T0 + 1, extra: "" },
      { auction: 2460, bidder: 1000, price: 3, dateTime: T0, extra: "" },
    ]);
    const prices = q1({ bids }).map((r) => r.price);
    assert.deepEqual(prices, [13.62, 112_098_764.412, 2.724]);
    assert.notEqual(0.908 * 15, 13.62, "a plain float product is not the decimal; euros() is");
    assert.equal(JSON.stringify(euros(15)), "13.62");
    assert.deepEqual(q2({ bids }), [
      { auction: 1107, price: 15 },
      { auction: 2460, price: 3 },
    ]);
  });

  test("q3 joins category-10 auctions with sellers in OR, ID, CA over all data; q3AsOf with the seller's version as of the auction", () => {
    const persons = [
      person({ id: 1, name: "A", state: "OR", dateTime: T0 }),
      person({ id: 2, name: "B", state: "WA", dateTime: T0 }),
      person({ id: 3, name: "C", city: "Boise", state: "CA", dateTime: T0 }),
      person({ id: 4, name: "D1", state: "WA", dateTime: T0 }),
      person({ id: 4, name: "D2", state: "ID", dateTime: T0 + 5_000 }),
      person({ id: 5, name: "E1", state: "OR", dateTime: T0 + 1_000 }),
      person({ id: 5, name: "E2", state: "WA", dateTime: T0 + 1_000 }),
      person({ id: 6, name: "F", state: "CA", dateTime: T0 + 9_000 }),
    ];
    const auctions = [
      auction({ id: 10, seller: 1 }),
      auction({ id: 11, seller: 2 }),
      auction({ id: 12, seller: 3, category: 11 }),
      auction({ id: 13, seller: 3 }),
      auction({ id: 14, seller: 99 }),
      auction({ id: 15, seller: 4, dateTime: T0 + 3_000 }),
      auction({ id: 16, seller: 4, dateTime: T0 + 5_000 }),
      auction({ id: 17, seller: 5, dateTime: T0 + 2_000 }),
      auction({ id: 18, seller: 6, dateTime: T0 + 8_999 }),
    ];
    assert.deepEqual(q3({ persons, auctions }), [
      { name: "A", city: "Bend", state: "OR", id: 10 },
      { name: "C", city: "Boise", state: "CA", id: 13 },
      { name: "D2", city: "Bend", state: "ID", id: 15 },
      { name: "D2", city: "Bend", state: "ID", id: 16 },
      { name: "E1", city: "Bend", state: "OR", id: 17 },
      { name: "F", city: "Bend", state: "CA", id: 18 },
    ]);
    assert.deepEqual(q3AsOf({ persons, auctions }), [
      { name: "A", city: "Bend", state: "OR", id: 10 },
      { name: "C", city: "Boise", state: "CA", id: 13 },
      // 15: at T0 + 3 s, person 4 is still D1 in WA; 16: D2's version is from the auction's very millisecond
      { name: "D2", city: "Bend", state: "ID", id: 16 },
      // 17: E1 and E2 are from the same millisecond; the later row, E2 in WA, holds. 18: F registers after it.
    ]);
  });

  test("q20 joins bids with category-10 auctions over all data; q20AsOf with the auction's version as of the bid", () => {
    const auctions = [
      auction({ id: 1, category: 10, itemName: "one", dateTime: T0 }),
      auction({ id: 2, category: 11, dateTime: T0 }),
      auction({ id: 3, category: 11, itemName: "three-old", dateTime: T0 }),
      auction({ id: 3, category: 10, itemName: "three-new", dateTime: T0 + 1_000 }),
      auction({ id: 4, category: 10, itemName: "four", dateTime: T0 + 2_000 }),
    ];
    const bids = [
      bid({ auction: 1, bidder: 7, dateTime: T0, extra: "b1" }),
      bid({ auction: 2, dateTime: T0 + 10 }),
      bid({ auction: 3, dateTime: T0 + 500, extra: "b3-early" }),
      bid({ auction: 3, dateTime: T0 + 1_000, extra: "b3-late" }),
      bid({ auction: 4, dateTime: T0 + 1_999, extra: "b4-before" }),
      bid({ auction: 5, dateTime: T0 + 1 }),
    ];
    const all = q20({ auctions, bids });
    assert.deepEqual(
      all.map((r) => [r.bid_extra, r.itemName]),
      [
        ["b1", "one"],
        ["b3-early", "three-new"],
        ["b3-late", "three-new"],
        ["b4-before", "four"],
      ],
    );
    assert.deepEqual(all[0], {
      auction: 1,
      bidder: 7,
      price: 100,
      channel: "Google",
      url: URL,
      bid_dateTime: T0,
      bid_extra: "b1",
      itemName: "one",
      description: "d",
      initialBid: 100,
      reserve: 200,
      auction_dateTime: T0,
      expires: T0 + 100,
      seller: 1000,
      category: 10,
      auction_extra: "",
    });
    assert.deepEqual(
      q20AsOf({ auctions, bids }).map((r) => [r.bid_extra, r.itemName]),
      [
        ["b1", "one"],
        ["b3-late", "three-new"],
      ],
      "b3-early meets auction 3 in category 11; b4-before comes before auction 4",
    );
  });

  test("q4 and q9: the bids of an auction are those from its dateTime to its expires, both included; q9's ties", () => {
    const auctions = [
      auction({ id: 1, category: 10, dateTime: T0 + 1_000, expires: T0 + 2_000 }),
      auction({ id: 2, category: 10, dateTime: T0, expires: T0 + 5_000 }),
      auction({ id: 3, category: 11, dateTime: T0, expires: T0 + 5_000 }),
      auction({ id: 4, category: 12, dateTime: T0, expires: T0 + 5_000 }),
    ];
    const bids = [
      bid({ auction: 1, price: 50, dateTime: T0 + 999 }),
      bid({ auction: 1, price: 5, dateTime: T0 + 1_000 }),
      bid({ auction: 1, price: 7, dateTime: T0 + 2_000 }),
      bid({ auction: 1, price: 100, dateTime: T0 + 2_001 }),
      bid({ auction: 2, price: 10, bidder: 1, dateTime: T0 + 1_500 }),
      bid({ auction: 2, price: 10, bidder: 9, dateTime: T0 + 1_400, extra: "earliest, bidder 9" }),
      bid({ auction: 2, price: 10, bidder: 3, dateTime: T0 + 1_400, extra: "earliest, bidder 3" }),
      bid({ auction: 4, price: 3, dateTime: T0 }),
    ];
    assert.deepEqual(q4({ auctions, bids }), [
      { id: 10, final: 8 }, // (7 + 10) / 2, rounded toward zero
      { id: 12, final: 3 },
    ]);
    const q9rows = q9({ auctions, bids });
    assert.deepEqual(
      q9rows.map((r) => [r.id, r.price, r.bid_dateTime - T0, r.bid_extra]),
      [
        [1, 7, 2_000, ""],
        [2, 10, 1_400, "earliest, bidder 3"],
        [4, 3, 0, ""],
      ],
    );
    assert.deepEqual(q9rows[0], { ...auctions[0], auction: 1, bidder: 1000, price: 7, bid_dateTime: T0 + 2_000, bid_extra: "" });
  });

  test("q5: per 10 s window advancing by 2 s, every auction with the most bids; a bid at a window's end is not in it", () => {
    const bids = [
      bid({ auction: 1, dateTime: T0 }),
      bid({ auction: 3, dateTime: T0 }),
      bid({ auction: 2, dateTime: T0 + 2_000 }),
      bid({ auction: 2, dateTime: T0 + 2_000 }),
      bid({ auction: 1, dateTime: T0 + 10_000 }),
    ];
    const rows = q5({ bids }).map((r) => [(r.windowStart - T0) / 1000, (r.windowEnd - r.windowStart) / 1000, r.auction, r.num]);
    assert.deepEqual(rows, [
      [-8, 10, 1, 1], // ties: both auctions with one bid
      [-8, 10, 3, 1],
      [-6, 10, 2, 2],
      [-4, 10, 2, 2],
      [-2, 10, 2, 2],
      [0, 10, 2, 2], // [0, 10 s) does not hold the bid at 10 s
      [2, 10, 2, 2],
      [4, 10, 1, 1],
      [6, 10, 1, 1],
      [8, 10, 1, 1],
      [10, 10, 1, 1],
    ]);
  });

  test("q7: per tumbling 10 s window the highest bid, ties to the lowest auction, the lowest bidder, the earliest", () => {
    const bids = [
      bid({ auction: 2, bidder: 9, price: 5, dateTime: T0 }),
      bid({ auction: 1, bidder: 8, price: 5, dateTime: T0 + 9_999, extra: "window 0" }),
      bid({ auction: 3, bidder: 7, price: 100, dateTime: T0 + 10_000 }),
      bid({ auction: 3, bidder: 4, price: 100, dateTime: T0 + 13_000 }),
      bid({ auction: 3, bidder: 4, price: 100, dateTime: T0 + 12_000, extra: "window 10" }),
      bid({ auction: 4, bidder: 1, price: 99, dateTime: T0 + 11_000 }),
      bid({ auction: 5, bidder: 1, price: 1, dateTime: T0 + 20_000 }),
    ];
    assert.deepEqual(q7({ bids }), [
      { auction: 1, bidder: 8, price: 5, dateTime: T0 + 9_999, extra: "window 0", windowStart: T0, windowEnd: T0 + 10_000 },
      { auction: 3, bidder: 4, price: 100, dateTime: T0 + 12_000, extra: "window 10", windowStart: T0 + 10_000, windowEnd: T0 + 20_000 },
      { auction: 5, bidder: 1, price: 1, dateTime: T0 + 20_000, extra: "", windowStart: T0 + 20_000, windowEnd: T0 + 30_000 },
    ]);
  });

  test("q8: persons with an auction in the 10 s window they registered in, once per window", () => {
    const persons = [
      person({ id: 1, name: "A", dateTime: T0 + 1_000 }),
      person({ id: 2, name: "B", dateTime: T0 + 9_000 }),
      person({ id: 3, name: "C", dateTime: T0 + 10_000 }),
      person({ id: 4, name: "D", dateTime: T0 + 10_000 }),
    ];
    const auctions = [
      auction({ seller: 1, dateTime: T0 + 9_999 }),
      auction({ seller: 1, dateTime: T0 + 5_000 }),
      auction({ seller: 2, dateTime: T0 + 10_000 }),
      auction({ seller: 3, dateTime: T0 + 19_999 }),
      auction({ seller: 4, dateTime: T0 + 9_999 }),
    ];
    assert.deepEqual(q8({ persons, auctions }), [
      { id: 1, name: "A", stime: T0 },
      { id: 3, name: "C", stime: T0 + 10_000 },
    ]);
  });

  test("q11: sessions per bidder with a 10 s gap; a bid exactly 10 s after the last starts a new session", () => {
    const bids = [
      bid({ bidder: 1, dateTime: T0 + 14_999 }),
      bid({ bidder: 2, dateTime: T0 + 100 }),
      bid({ bidder: 1, dateTime: T0 }),
      bid({ bidder: 1, dateTime: T0 + 24_999 }),
      bid({ bidder: 1, dateTime: T0 + 5_000 }),
    ];
    assert.deepEqual(q11({ bids }), [
      { bidder: 1, bid_count: 3, starttime: T0, endtime: T0 + 24_999 },
      { bidder: 1, bid_count: 1, starttime: T0 + 24_999, endtime: T0 + 34_999 },
      { bidder: 2, bid_count: 1, starttime: T0 + 100, endtime: T0 + 10_100 },
    ]);
  });

  test("q14: the price filter in exact decimals, the time of day by UTC hour, count_char", () => {
    const h = 3_600_000;
    const bids = [
      bid({ price: 1_101_321, dateTime: T0 + 8 * h }), // 999,999.468 euros: out
      bid({ price: 1_101_322, dateTime: T0 + 8 * h, extra: "abcabcc" }), // 1,000,000.376: in
      bid({ price: 55_066_079, dateTime: T0 + 19 * h - 1 }), // 49,999,999.732: in
      bid({ price: 55_066_080, dateTime: T0 + 19 * h }), // 50,000,000.64: out
      bid({ price: 2_000_000, dateTime: T0 + 19 * h }),
      bid({ price: 2_000_000, dateTime: T0 + 20 * h }),
      bid({ price: 2_000_000, dateTime: T0 + 7 * h - 1 }),
      bid({ price: 2_000_000, dateTime: T0 + 7 * h }),
    ];
    assert.deepEqual(
      q14({ bids }).map((r) => [r.price, r.bidTimeType, r.c_counts]),
      [
        [1_000_000.376, "dayTime", 3],
        [49_999_999.732, "dayTime", 0],
        [1_816_000, "otherTime", 0],
        [1_816_000, "nightTime", 0],
        [1_816_000, "nightTime", 0],
        [1_816_000, "otherTime", 0],
      ],
    );
  });

  test("q15, q16, q17: statistics per day (UTC), per channel and day, per auction and day", () => {
    assert.equal(formatDay(T0 - 1), "2024-12-31");
    assert.equal(formatMinute(T0 - 1), "23:59");
    const bids = [
      bid({ bidder: 1, auction: 10, price: 9_999, dateTime: T0 - 1, channel: "Google" }),
      bid({ bidder: 1, auction: 10, price: 10_000, dateTime: T0, channel: "Google" }),
      bid({ bidder: 2, auction: 10, price: 999_999, dateTime: T0 + 60_000, channel: "channel-7" }),
      bid({ bidder: 2, auction: 11, price: 1_000_000, dateTime: T0 + 600_000, channel: "channel-7" }),
      bid({ bidder: 3, auction: 11, price: 5, dateTime: T0 + 62_000, channel: "channel-7" }),
    ];
    const stats = (...n: number[]) => ({
      total_bids: n[0],
      rank1_bids: n[1],
      rank2_bids: n[2],
      rank3_bids: n[3],
      total_bidders: n[4],
      rank1_bidders: n[5],
      rank2_bidders: n[6],
      rank3_bidders: n[7],
      total_auctions: n[8],
      rank1_auctions: n[9],
      rank2_auctions: n[10],
      rank3_auctions: n[11],
    });
    assert.deepEqual(q15({ bids }), [
      { day: "2024-12-31", ...stats(1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0) },
      { day: "2025-01-01", ...stats(4, 1, 2, 1, 3, 1, 2, 1, 2, 1, 1, 1) },
    ]);
    assert.deepEqual(q16({ bids }), [
      { channel: "Google", day: "2024-12-31", minute: "23:59", ...stats(1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0) },
      { channel: "Google", day: "2025-01-01", minute: "00:00", ...stats(1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0) },
      { channel: "channel-7", day: "2025-01-01", minute: "00:10", ...stats(3, 1, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1) },
    ]);
    const day = { total_bids: 0, rank1_bids: 0, rank2_bids: 0, rank3_bids: 0 };
    assert.deepEqual(q17({ bids }), [
      { auction: 10, day: "2024-12-31", ...day, total_bids: 1, rank1_bids: 1, min_price: 9_999, max_price: 9_999, avg_price: 9_999, sum_price: 9_999 },
      { auction: 10, day: "2025-01-01", ...day, total_bids: 2, rank2_bids: 2, min_price: 10_000, max_price: 999_999, avg_price: 504_999, sum_price: 1_009_999 },
      {
        auction: 11,
        day: "2025-01-01",
        ...day,
        total_bids: 2,
        rank1_bids: 1,
        rank3_bids: 1,
        min_price: 5,
        max_price: 1_000_000,
        avg_price: 500_002,
        sum_price: 1_000_005,
      },
    ]);
  });

  test("q18: the last bid per bidder and auction; ties of dateTime to the highest price, then the greatest channel", () => {
    const bids = [
      bid({ bidder: 1, auction: 1, price: 5, dateTime: T0 + 100 }),
      bid({ bidder: 1, auction: 1, price: 3, dateTime: T0 + 200 }),
      bid({ bidder: 1, auction: 2, price: 1, dateTime: T0 + 300, channel: "A" }),
      bid({ bidder: 1, auction: 2, price: 9, dateTime: T0 + 300, channel: "B" }),
      bid({ bidder: 1, auction: 2, price: 9, dateTime: T0 + 300, channel: "A" }),
      bid({ bidder: 1, auction: 2, price: 100, dateTime: T0 + 250 }),
      bid({ bidder: 0, auction: 1, price: 1, dateTime: T0 }),
    ];
    assert.deepEqual(q18({ bids }), [bids[6], bids[1], bids[3]]);
  });

  test("q19: the 10 highest bids per auction; ties of price to the latest, then the highest bidder", () => {
    const bids = [
      ...Array.from({ length: 12 }, (_, i) => bid({ auction: 1, price: i + 1, dateTime: T0 + i })),
      bid({ auction: 2, price: 5, bidder: 1, dateTime: T0 + 200 }),
      bid({ auction: 2, price: 5, bidder: 9, dateTime: T0 + 100 }),
      bid({ auction: 2, price: 5, bidder: 3, dateTime: T0 + 100 }),
      bid({ auction: 2, price: 7, bidder: 5, dateTime: T0 + 300 }),
    ];
    const rows = q19({ bids });
    assert.deepEqual(
      rows.map((r) => [r.auction, r.rank_number, r.price, r.bidder]),
      [...Array.from({ length: 10 }, (_, i) => [1, i + 1, 12 - i, 1000]), [2, 1, 7, 5], [2, 2, 5, 1], [2, 3, 5, 9], [2, 4, 5, 3]],
    );
    assert.deepEqual(rows[0], { ...bids[11], rank_number: 1 });
  });

  test("q21: the channel id from the hot channel's name or the url's channel_id parameter", () => {
    const u = "https://www.nexmark.com/a/b/c/item.htm?query=1";
    const bids = [
      bid({ channel: "Apple" }),
      bid({ channel: "GOOGLE" }),
      bid({ channel: "facebook" }),
      bid({ channel: "Baidu", url: `${u}&channel_id=77` }),
      bid({ channel: "channel-5", url: `${u}&channel_id=42` }),
      bid({ channel: "channel-6", url: "channel_id=7&x=1" }),
      bid({ channel: "channel-7", url: `${u}&xchannel_id=9` }),
      bid({ channel: "channel-8", url: `${u}&channel_id=&x=1` }),
      bid({ channel: "channel-9", url: `${u}&channel_id=1&channel_id=2` }),
      bid({ channel: "channel-10", url: u }),
    ];
    assert.deepEqual(
      q21({ bids }).map((r) => [r.channel, r.channel_id]),
      [
        ["Apple", "0"],
        ["GOOGLE", "1"],
        ["facebook", "2"],
        ["Baidu", "3"],
        ["channel-5", "42"],
        ["channel-6", "7"],
        ["channel-8", ""],
        ["channel-9", "1"],
      ],
    );
  });

  test("q22: the URL's directories by SPLIT_INDEX, null past the last piece", () => {
    const bids = [bid({ url: "https://www.nexmark.com/a_b/c/de/item.htm?query=1&channel_id=5" }), bid({ url: "https://x/y" }), bid({ url: "" })];
    assert.deepEqual(
      q22({ bids }).map((r) => [r.dir1, r.dir2, r.dir3]),
      [
        ["a_b", "c", "de"],
        ["y", null, null],
        [null, null, null],
      ],
    );
  });

  test("sortedRows compares row sets whatever their order and key order", () => {
    assert.deepEqual(
      sortedRows([
        { b: 2, a: 1 },
        { a: 0, b: 5 },
      ]),
      sortedRows([
        { a: 0, b: 5 },
        { a: 1, b: 2 },
      ]),
    );
  });
});

describe("nexmark batch queries on generated data", () => {
  test("100,000 events of seed 1: each query's row count", (t) => {
    const data = nexmarkDataSet({ seed: 1, events: 100_000 });
    const counts: Record<string, number> = {};
    const start = performance.now();
    for (const [name, run] of Object.entries(nexmarkQueries)) {
      const rows: object[] = run(data);
      counts[name] = rows.length;
      t.diagnostic(`${name}: ${rows.length} rows`);
    }
    t.diagnostic(`all queries: ${(performance.now() - start).toFixed(0)} ms`);
    const bids = data.bids.length;
    assert.equal(counts.q0, bids);
    assert.equal(counts.q1, bids);
    assert.equal(counts.q22, bids);
    // Auction ids run from 1000 to about 7000 here, and hot auctions are multiples of 100, none of 123: only cold
    // bids on one of the ~49 multiples of 123 pass.
    assert.equal(counts.q2, 372);
    for (const name of ["q3", "q3AsOf", "q4", "q5", "q7", "q8", "q9", "q11", "q14", "q15", "q16", "q17", "q18", "q19", "q20", "q20AsOf", "q21"])
      assert.ok((counts[name] as number) > 0, `${name} has rows`);
    assert.ok((counts.q3AsOf as number) <= (counts.q3 as number) && (counts.q20AsOf as number) <= (counts.q20 as number));
    assert.equal(counts.q4, 5, "every category has a won auction");
    assert.equal(counts.q7, 2, "10 s from 23:59:55 fill two tumbling windows");
    assert.equal(counts.q15, 2, "two days");
    assert.ok((counts.q21 as number) > bids * 0.9 && (counts.q21 as number) < bids, "hot channels, and 9 in 10 of the others");
  });
});
