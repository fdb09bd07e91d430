import { after, before, describe, test } from "node:test";
import {
  assert,
  assertEquals,
  assertRejects,
  assertStringIncludes,
} from "@std/assert";
import { spawnSync } from "node:child_process";
import postgres from "postgres";
import {
  type ModelChange,
  openPostgresModelStore,
  type PostgresModelStore,
} from "../src/server/storage/postgres/store.ts";
import {
  migrate,
  MIGRATIONS,
  SchemaVersionError,
} from "../src/server/storage/postgres/migrations.ts";
import { MAX_METRIC_NAMES_PER_MODEL } from "../src/protocol/metrics_rules.ts";
import {
  ModelLimitError,
  StorageUnavailableError,
} from "../src/server/storage/contract.ts";
import {
  createTestDatabase,
  databaseUrl,
  haveServices,
  postgresDir,
  type TestDatabase,
} from "./support/services.ts";
import { runScript, waitUntil } from "./support/common.ts";
import { closedPort, NEW_MODEL as init } from "./support/server.ts";

if (haveServices("PostgreSQL model store", ["postgres"])) {
  describe("PostgreSQL model store on a real PostgreSQL", () => {
    let db: TestDatabase;
    let store: PostgresModelStore;
    let other: PostgresModelStore; // a second pool, as a second process has

    before(async () => {
      db = await createTestDatabase();
      [store, other] = await Promise.all([
        openPostgresModelStore(db.url),
        openPostgresModelStore(db.url),
      ]);
    });

    after(async () => {
      await store.close();
      await other.close();
      await db.drop();
    });

    test("two stores opening a new database at once apply each migration once", async () => {
      const sql = postgres(db.url, { max: 1, onnotice: () => {} });
      const rows = await sql`SELECT version FROM hub_schema_migrations`;
      assertEquals(rows.map((r) => r.version).sort(), [1, 2, 3]);
      assertEquals(await migrate(sql), []);
      await sql.end();
    });

    test("create() commits a new document that the other pool reads at once", async () => {
      const created = await store.create(
        { ...init, parent: "yolov8n.pt" },
        1000,
      );
      assertEquals(created.id.length, 20);
      assertEquals(created.status, "new");
      assertEquals(created.parent, "yolov8n.pt");
      assertEquals(await other.get(created.id), created);
      assertEquals(await other.get("not-an-id!"), undefined);
      assertEquals(await other.get("AAAAAAAAAAAAAAAAAAAA"), undefined);
    });

    test("update() never loses a change when two pools update one model at once", async () => {
      const { id } = await store.create(init, 1000);
      await Promise.all(
        Array.from(
          { length: 30 },
          (_, i) =>
            (i % 2 === 0 ? store : other).update(id, (record) => {
              const seen = (record.extra.seen as number[] | undefined) ?? [];
              record.extra.seen = [...seen, i];
              return i;
            }, 2000 + i),
        ),
      );
      const record = await store.get(id);
      const seen = (record?.extra.seen as number[]).toSorted((a, b) => a - b);
      assertEquals(seen, Array.from({ length: 30 }, (_, i) => i));
    });

    test("update() passes the change's result through and cancels on a throw", async () => {
      const { id } = await store.create(init, 1000);
      const done = await store.update(id, (r) => {
        r.name = "renamed";
        return "ok";
      }, 5000);
      assertEquals(done?.result, "ok");
      assertEquals(done?.record.updatedAt, 5000);
      await assertRejects(
        () =>
          store.update(id, (r) => {
            r.name = "never";
            throw new RangeError("cancelled");
          }, 6000),
        RangeError,
      );
      assertEquals((await other.get(id))?.name, "renamed");
      assertEquals(
        await store.update("AAAAAAAAAAAAAAAAAAAA", () => 1, 1),
        undefined,
      );
    });

    test("upsertMetrics() replaces a re-sent epoch and moves a new model to training", async () => {
      const { id } = await store.create(init, 1000);
      const first = await store.upsertMetrics(
        id,
        new Map([[0, { "train/loss": 1.5 }], [1, { "train/loss": 1.2 }]]),
        2000,
      );
      assertEquals(first?.status, "training");
      assertEquals(first?.updatedAt, 2000);
      await other.upsertMetrics(
        id,
        new Map([[1, { "train/loss": 1.1, "val/loss": null }], [2, {
          "train/loss": 0.9,
        }]]),
        3000,
      );
      assertEquals(await store.listMetrics(id), [
        { epoch: 0, metrics: { "train/loss": 1.5 } },
        { epoch: 1, metrics: { "train/loss": 1.1, "val/loss": null } },
        { epoch: 2, metrics: { "train/loss": 0.9 } },
      ]);
      assertEquals(
        (await store.listMetrics(id, { afterEpoch: 0, limit: 1 }))?.map((e) =>
          e.epoch
        ),
        [1],
      );
      assertEquals(await other.epochCount(id), 3);
      assertEquals(await store.listMetrics("AAAAAAAAAAAAAAAAAAAA"), undefined);
      assertEquals(
        await store.upsertMetrics("AAAAAAAAAAAAAAAAAAAA", new Map(), 1),
        undefined,
      );
      await assertRejects(
        () => store.upsertMetrics(id, new Map([[-1, {}]]), 1),
        RangeError,
      );
    });

    test("concurrent metrics posts through two pools keep every epoch", async () => {
      const { id } = await store.create(init, 1000);
      await Promise.all(
        Array.from(
          { length: 40 },
          (_, epoch) =>
            (epoch % 2 === 0 ? store : other).upsertMetrics(
              id,
              new Map([[epoch, { "train/loss": epoch }]]),
              1000 + epoch,
            ),
        ),
      );
      assertEquals(await store.epochCount(id), 40);
    });

    test("delete() soft hides the model and keeps its rows; hard removes them", async () => {
      const soft = await store.create(init, 1000);
      await store.upsertMetrics(soft.id, new Map([[0, { a: 1 }]]), 1100);
      assertEquals(await store.delete(soft.id, false, 1200), true);
      assertEquals(await other.get(soft.id), undefined);
      assertEquals(await store.delete(soft.id, false, 1300), false);
      assertEquals(await store.epochCount(soft.id), 0);
      const sql = postgres(db.url, { max: 1, onnotice: () => {} });
      const kept =
        await sql`SELECT count(*)::int AS n FROM hub_metrics WHERE model_id = ${soft.id}`;
      assertEquals(kept[0]?.n, 1);
      const hard = await store.create(init, 1000);
      await store.upsertMetrics(hard.id, new Map([[0, { a: 1 }]]), 1100);
      assertEquals(await store.delete(hard.id, true, 1200), true);
      const gone =
        await sql`SELECT count(*)::int AS n FROM hub_metrics WHERE model_id = ${hard.id}`;
      assertEquals(gone[0]?.n, 0);
      assertEquals(await store.delete(hard.id, true, 1300), false);
      await sql.end();
    });

    test("listIds() pages in ascending order without repeats", async () => {
      const seen: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await other.listIds({ limit: 3, cursor });
        assert(page.items.length <= 3);
        seen.push(...page.items);
        cursor = page.next;
      } while (cursor !== undefined);
      assertEquals(seen, [...seen].sort());
      assertEquals(new Set(seen).size, seen.length);
      assert(seen.length >= 5);
    });

    test("watch() hears each kind of change committed through another pool, in commit order", async () => {
      const heard: ModelChange[] = [];
      const stop = await store.watch((change) => heard.push(change));
      const { id } = await other.create(init, Date.now());
      const mine = (): string[] =>
        heard.filter((c) => c.id === id).map((c) => c.kind);
      await other.upsertMetrics(id, new Map([[0, { a: 1 }]]), Date.now());
      await other.update(id, (r) => {
        r.name = "renamed";
      }, Date.now());
      // A change that rolls back notifies nothing: the deletion committed
      // after it is heard right after the update.
      await assertRejects(
        () =>
          other.update(id, () => {
            throw new RangeError("cancelled");
          }, Date.now()),
        RangeError,
      );
      await other.delete(id, false, Date.now());
      await waitUntil(() => mine().length >= 4, "the four changes are heard");
      assertEquals(mine(), ["created", "metrics", "updated", "deleted"]);
      await stop();
      // Stopped: a change committed now reaches nobody, while a watch
      // started afterwards hears the next one.
      const after = heard.length;
      const unheard = await other.create(init, Date.now());
      const later: ModelChange[] = [];
      const stopLater = await store.watch((change) => later.push(change));
      const next = await other.create(init, Date.now());
      await waitUntil(
        () => later.some((c) => c.id === next.id),
        "the new watch hears the next creation",
      );
      await stopLater();
      assertEquals(heard.length, after, "nothing is heard after stop()");
      assert(!later.some((c) => c.id === unheard.id));
    });

    test("watch() hears a change committed while its connection was lost, once it listens again", async () => {
      const name = new URL(db.url).pathname.slice(1);
      const admin = postgres(databaseUrl!, { max: 1, onnotice: () => {} });
      const heard: ModelChange[] = [];
      const stop = await store.watch((change) => heard.push(change));
      const { id } = await other.create(init, Date.now());
      await waitUntil(() => heard.some((c) => c.id === id), "the creation");
      try {
        // Deaf: no new connection to the database, and the listening one
        // ended. The write goes through a connection the other pool has
        // open, so its notification reaches no listener.
        await admin.unsafe(`ALTER DATABASE ${name} ALLOW_CONNECTIONS false`);
        const ended = await admin<{ ended: boolean }[]>`
          SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity
          WHERE datname = ${name} AND query ILIKE '%listen "hub_changes:%'`;
        assert(ended.length >= 1 && ended.every((r) => r.ended));
        await other.update(id, (r) => {
          r.name = "while deaf";
        }, Date.now());
      } finally {
        await admin.unsafe(`ALTER DATABASE ${name} ALLOW_CONNECTIONS true`);
        await admin.end();
      }
      await waitUntil(
        () => heard.some((c) => c.id === id && c.kind === "updated"),
        "the change made while deaf is heard after listening again",
        30_000,
      );
      await stop();
    });

    test("two HUBs in different schemas of one database do not hear each other", async () => {
      const admin = postgres(db.url, { max: 1, onnotice: () => {} });
      await admin`CREATE SCHEMA IF NOT EXISTS team_a`;
      await admin`CREATE SCHEMA IF NOT EXISTS team_b`;
      await admin.end();
      const inSchema = (schema: string): string => {
        const url = new URL(db.url);
        url.searchParams.set("search_path", schema);
        return url.href;
      };
      const [a, b, a2] = await Promise.all([
        openPostgresModelStore(inSchema("team_a")),
        openPostgresModelStore(inSchema("team_b")),
        openPostgresModelStore(inSchema("team_a")),
      ]);
      try {
        const heardA: string[] = [];
        const heardB: string[] = [];
        const stops = await Promise.all([
          a.watch((change) => heardA.push(change.id)),
          b.watch((change) => heardB.push(change.id)),
        ]);
        const inB = await b.create(init, Date.now());
        const inA = await a2.create(init, Date.now());
        await waitUntil(
          () => heardA.includes(inA.id) && heardB.includes(inB.id),
          "each HUB hears its own schema's creation",
        );
        assertEquals(await a.get(inB.id), undefined, "the tables are apart");
        assertEquals(heardA, [inA.id]);
        assertEquals(heardB, [inB.id]);
        for (const stop of stops) await stop();
      } finally {
        await Promise.all([a.close(), b.close(), a2.close()]);
      }
    });

    test("migration 3 collects the names of metrics stored before it, and the name bound counts them", async () => {
      const old = await createTestDatabase();
      const sql = postgres(old.url, { max: 1, onnotice: () => {} });
      try {
        assertEquals(await migrate(sql, MIGRATIONS.slice(0, 2)), [1, 2]);
        const id = "MigratedModel0000001";
        const record = { ...(await store.create(init, 1000)), id };
        await sql`
          INSERT INTO hub_models (id, document, created_at, updated_at)
          VALUES (${id}, ${
          sql.json(JSON.parse(JSON.stringify(record)))
        }, 1000, 1000)`;
        const half = MAX_METRIC_NAMES_PER_MODEL / 2;
        for (const [epoch, from] of [[0, 0], [1, half]] as const) {
          const metrics = Object.fromEntries(
            Array.from({ length: half }, (_, i) => [`m${from + i}`, i]),
          );
          await sql`
            INSERT INTO hub_metrics (model_id, epoch, metrics, recorded_at)
            VALUES (${id}, ${epoch}, ${sql.json(metrics)}, 1000)`;
        }
        const migrated = await openPostgresModelStore(old.url);
        try {
          await assertRejects(
            () => migrated.upsertMetrics(id, new Map([[2, { new: 1 }]]), 2000),
            ModelLimitError,
          );
          assert(
            await migrated.upsertMetrics(id, new Map([[2, { m7: 1 }]]), 2000),
          );
          assertEquals(await migrated.epochCount(id), 3);
        } finally {
          await migrated.close();
        }
      } finally {
        await sql.end();
        await old.drop();
      }
    });

    test("importModel() records the imported epochs' metric names for the name bound", async () => {
      const source = await store.create(init, 1000);
      const record = { ...source, id: "ImportedModel0000001" };
      const names = Object.fromEntries(
        Array.from(
          { length: MAX_METRIC_NAMES_PER_MODEL },
          (_, i) => [`n${i}`, i],
        ),
      );
      await store.importModel(record, [{ epoch: 0, metrics: names }]);
      await assertRejects(
        () => other.upsertMetrics(record.id, new Map([[1, { more: 1 }]]), 2000),
        ModelLimitError,
      );
      assert(
        await other.upsertMetrics(record.id, new Map([[1, { n3: 1 }]]), 2000),
      );
    });

    test("a schema newer than the server is refused", async () => {
      const sql = postgres(db.url, { max: 1, onnotice: () => {} });
      await sql`INSERT INTO hub_schema_migrations (version, name) VALUES (99, 'future')`;
      await assertRejects(
        () => openPostgresModelStore(db.url),
        SchemaVersionError,
      );
      await sql`DELETE FROM hub_schema_migrations WHERE version = 99`;
      await sql.end();
    });
  });

  describe("PostgreSQL model store faults", () => {
    test("an unreachable database is StorageUnavailableError without the password", async () => {
      const port = await closedPort();
      const error = await assertRejects(
        () =>
          openPostgresModelStore(
            `postgres://hub:s3cret-pass@127.0.0.1:${port}/hub`,
            { connectTimeoutSeconds: 2 },
          ),
        StorageUnavailableError,
      );
      assertStringIncludes(error.message, `127.0.0.1:${port}/hub`);
      assert(!error.message.includes("s3cret-pass"));
    });

    test("a URL that is not postgres:// is a TypeError", async () => {
      await assertRejects(
        () => openPostgresModelStore("mysql://u:pw@h/db"),
        TypeError,
      );
    });

    test("migrate: false on an empty database says to run migrate", async () => {
      const db = await createTestDatabase();
      try {
        const error = await assertRejects(
          () => openPostgresModelStore(db.url, { migrate: false }),
          Error,
        );
        assertStringIncludes(error.message, "migrate");
      } finally {
        await db.drop();
      }
    });
  });

  if (haveServices("PostgreSQL restart", ["postgres", "postgres-dir"])) {
    describe("PostgreSQL restarted under the store", () => {
      test("a store closed right after PostgreSQL came back leaves nothing open: the process exits", async () => {
        const db = await createTestDatabase();
        try {
          const script =
            new URL("../scripts/services/postgres.sh", import.meta.url)
              .pathname;
          const child = await runScript(
            new URL("./fixtures/postgres_close_child.ts", import.meta.url)
              .pathname,
            [db.url, postgresDir!, script],
            { timeout: 60_000 },
          );
          assertStringIncludes(child.stdout, "closed", child.stderr);
          assertEquals(child.killed, false, "the child exits by itself");
          assertEquals(child.code, 0, child.stderr);
        } finally {
          await db.drop();
        }
      });

      test("calls answer StorageUnavailableError while it is down, then recover by themselves", async () => {
        const db = await createTestDatabase();
        const store = await openPostgresModelStore(db.url, {
          connectTimeoutSeconds: 2,
        });
        const heard: ModelChange[] = [];
        const stopWatching = await store.watch((change) => heard.push(change));
        try {
          const { id } = await store.create(init, 1000);
          await store.upsertMetrics(id, new Map([[0, { a: 1 }]]), 1100);
          const script =
            new URL("../scripts/services/postgres.sh", import.meta.url)
              .pathname;
          const stop = spawnSync("bash", [script, "stop", postgresDir!], {
            encoding: "utf8",
          });
          assertEquals(stop.status, 0, stop.stderr);
          try {
            await assertRejects(
              () => store.upsertMetrics(id, new Map([[1, { a: 2 }]]), 1200),
              StorageUnavailableError,
            );
            await assertRejects(() => store.get(id), StorageUnavailableError);
          } finally {
            const start = spawnSync("bash", [script, "restart", postgresDir!], {
              encoding: "utf8",
            });
            assertEquals(start.status, 0, start.stderr);
          }
          // The pool reconnects on its own; the client's retry now lands.
          await waitUntil(
            async () => {
              try {
                await store.upsertMetrics(id, new Map([[1, { a: 2 }]]), 1300);
                return true;
              } catch (error) {
                if (error instanceof StorageUnavailableError) return false;
                throw error;
              }
            },
            "the store reaches PostgreSQL again",
            30_000,
          );
          assertEquals(await store.epochCount(id), 2);
          // The listener reconnects by itself: changes made through another
          // pool after the restart are heard again.
          const other = await openPostgresModelStore(db.url);
          try {
            await waitUntil(
              async () => {
                await other.update(id, (r) => {
                  r.name = "after restart";
                }, Date.now());
                return heard.some((c) => c.id === id && c.kind === "updated");
              },
              "a change after the restart is heard",
              30_000,
            );
          } finally {
            await other.close();
          }
        } finally {
          await stopWatching();
          await store.close();
          await db.drop();
        }
      });
    });
  }
}
