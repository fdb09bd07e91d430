import { describe, test } from "node:test";
import { assert, assertEquals, assertMatch, assertThrows } from "@std/assert";
import {
  createProgressBar,
  createProgressLines,
  formatProgress,
} from "../src/session/progress.ts";

describe("formatProgress()", () => {
  test("shows bytes, percent, rate and ETA when all are known", () => {
    assertEquals(
      formatProgress({ loaded: 250_000_000, total: 1_000_000_000 }, {
        label: "Uploading best.pt",
        rate: 50_000_000,
        width: 8,
      }),
      "Uploading best.pt [##------] 250 MB/1 GB 25% 50 MB/s ETA 0:15",
    );
  });

  test("leaves out what is unknown", () => {
    assertEquals(
      formatProgress({ loaded: 1234, total: undefined }),
      "1.23 kB",
    );
    assertEquals(
      formatProgress({ loaded: 10, total: 10 }, { width: 0, rate: 5 }),
      "10 B/10 B 100% 5 B/s",
    );
    assertEquals(formatProgress({ loaded: 0, total: 0 }), "0 B/0 B 100%");
  });

  test("formats hours in the ETA and never exceeds 100%", () => {
    assertMatch(
      formatProgress({ loaded: 0, total: 7_200_000 }, { rate: 1000 }),
      /0% 1 kB\/s ETA 2:00:00$/,
    );
    assertMatch(formatProgress({ loaded: 20, total: 10 }), /100%$/);
  });
});

describe("createProgressBar()", () => {
  function fakeClock() {
    let time = 0;
    return { now: () => time, advance: (ms: number) => (time += ms) };
  }

  test("redraws in place at most once per interval and ends with a newline", () => {
    const clock = fakeClock();
    const writes: string[] = [];
    const bar = createProgressBar({
      label: "Up",
      write: (t) => writes.push(t),
      interval: 100,
      now: clock.now,
    });
    assert(bar !== undefined);
    bar.onProgress({ loaded: 0, total: 1000 });
    for (let i = 1; i < 10; i++) {
      clock.advance(10);
      bar.onProgress({ loaded: i * 10, total: 1000 });
    }
    assertEquals(writes.length, 1, "throttled to the first draw");
    clock.advance(100);
    bar.onProgress({ loaded: 500, total: 1000 });
    assertEquals(writes.length, 2);
    assert(writes.every((w) => w.startsWith("\r")));
    assertMatch(writes[1] ?? "", /50%/);
    assertMatch(writes[1] ?? "", /B\/s/);
    bar.onProgress({ loaded: 1000, total: 1000 });
    assertEquals(writes.length, 3, "the final state is always drawn");
    bar.done();
    bar.done();
    assertEquals(writes.at(-1), "\n");
    assertEquals(writes.filter((w) => w === "\n").length, 1);
    bar.onProgress({ loaded: 1000, total: 1000 });
    assertEquals(writes.at(-1), "\n", "nothing after done()");
  });

  test("pads a shorter line so no old characters remain", () => {
    const writes: string[] = [];
    const clock = fakeClock();
    const bar = createProgressBar({
      write: (t) => writes.push(t),
      interval: 0,
      now: clock.now,
    });
    bar?.onProgress({ loaded: 900_000_000, total: 1_000_000_000 });
    clock.advance(1000);
    bar?.onProgress({ loaded: 0, total: 1_000_000_000 });
    assertEquals(writes[1]?.length, writes[0]?.length);
  });

  test("a throwing writer never breaks the caller", () => {
    const bar = createProgressBar({
      write: () => {
        throw new Error("closed terminal");
      },
    });
    bar?.onProgress({ loaded: 1, total: 2 });
    bar?.done();
    assert(bar !== undefined);
  });

  test("without a terminal (as under test) no bar is created", () => {
    // Test runners pipe standard error, or CI is set: either way no bar.
    const proc = (globalThis as {
      process?: { stderr?: { isTTY?: boolean }; env?: Record<string, string> };
    }).process;
    const ci = proc?.env?.CI;
    const isTTY = proc?.stderr?.isTTY === true;
    if (
      !isTTY || (ci !== undefined && ci !== "" && ci !== "0" && ci !== "false")
    ) {
      assertEquals(createProgressBar(), undefined);
    } else assertEquals(typeof createProgressBar()?.onProgress, "function");
  });

  test("invalid options are refused", () => {
    assertThrows(() => createProgressBar({ interval: -1 }), RangeError);
    assertThrows(
      () => createProgressBar({ write: 3 as unknown as () => void }),
      TypeError,
    );
  });
});

describe("createProgressLines()", () => {
  test("without a terminal, progress is a whole line per 10 % and at the end", () => {
    let time = 0;
    const lines: string[] = [];
    const progress = createProgressLines({
      label: "Uploading best.pt",
      write: (line) => lines.push(line),
      now: () => time,
    });
    for (let loaded = 0; loaded <= 1_000_000; loaded += 1_000) {
      time += 1;
      progress.onProgress({ loaded, total: 1_000_000 });
    }
    progress.done();
    progress.done();
    // 0 %, 10 %, ..., 90 %, then the end: bounded whatever the chunk count.
    assertEquals(lines.length, 11);
    assert(lines.every((l) => !l.includes("\r") && !l.includes("\n")));
    assertMatch(lines[0]!, /^Uploading best\.pt 0 B\/1 MB 0%/);
    assertMatch(lines.at(-1)!, /1 MB\/1 MB 100%/);
  });

  test("a slow upload still writes a line every interval", () => {
    let time = 0;
    const lines: string[] = [];
    const progress = createProgressLines({
      write: (line) => lines.push(line),
      interval: 10_000,
      now: () => time,
    });
    progress.onProgress({ loaded: 0, total: 1_000_000 });
    for (let i = 1; i <= 5; i++) {
      time += 10_000;
      progress.onProgress({ loaded: i, total: 1_000_000 });
    }
    assertEquals(lines.length, 6);
  });
});
