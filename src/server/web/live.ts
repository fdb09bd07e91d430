/**
 * Live updates for open model pages: the server calls
 * {@linkcode LiveHub.notify} after it stores anything about a model, and
 * every page watching that model gets a server-sent `update` event, then
 * fetches the changed part of the page.
 *
 * Notifications for one model are merged: the first change after a quiet
 * spell reaches the pages after {@linkcode LiveHubOptions.coalesceMs}
 * (so an epoch and its heartbeat make one event), and then at most one
 * event per {@linkcode LiveHubOptions.minIntervalMs} follows, so a trainer
 * posting hundreds of epochs a second costs an open page two updates a
 * second while a real run (an epoch every few seconds) is shown at once.
 * Ingest never waits for a page: writing an event only enqueues bytes on
 * the page's stream.
 *
 * The event stream is a plain `ReadableStream` rather than Hono's
 * `streamSSE`: it must end when the server shuts down (a signal) and when the
 * browser goes away (`cancel`), which `streamSSE` tracks through
 * `request.signal` (on Deno that aborts as soon as a response is sent).
 *
 * @module
 */

/** Options of {@linkcode LiveHub}. */
export interface LiveHubOptions {
  /** Delay that merges a burst of notifications for one model. @default {25} */
  coalesceMs?: number | undefined;
  /** Shortest time between two events for one model. @default {500} */
  minIntervalMs?: number | undefined;
  /** Interval of keep-alive comments on open streams. @default {25000} */
  keepAliveMs?: number | undefined;
}

type Listener = () => void;

/** What an update event carries. */
export interface LiveState {
  /** Training status. */
  status: string;
  /** Stored epochs. */
  epochs: number;
  /** Last change, ms since the epoch. */
  updatedAt: number;
}

/** Fans model changes out to open pages. */
export class LiveHub {
  #listeners = new Map<string, Set<Listener>>();
  #pending = new Map<string, ReturnType<typeof setTimeout>>();
  #lastSent = new Map<string, number>();
  #everyChange = new Set<(id: string) => void>();
  #coalesceMs: number;
  #minIntervalMs: number;
  #keepAliveMs: number;

  /**
   * Creates a hub.
   *
   * @param options Coalescing delay and keep-alive interval.
   */
  constructor(options: LiveHubOptions = {}) {
    const { coalesceMs = 25, minIntervalMs = 500, keepAliveMs = 25_000 } =
      options;
    this.#coalesceMs = coalesceMs;
    this.#minIntervalMs = minIntervalMs;
    this.#keepAliveMs = keepAliveMs;
  }

  /** Number of open event streams. */
  get connections(): number {
    let n = 0;
    for (const set of this.#listeners.values()) n += set.size;
    return n;
  }

  /**
   * Calls `listener` synchronously with the id of every change notified,
   * e.g. to drop a cached copy of the model.
   *
   * @param listener Receives the model id.
   * @returns Stops the calls.
   */
  onEveryChange(listener: (id: string) => void): () => void {
    this.#everyChange.add(listener);
    return () => this.#everyChange.delete(listener);
  }

  /**
   * Tells the pages watching a model that it changed. Cheap when nobody
   * watches.
   *
   * @param id Model id.
   */
  notify(id: string): void {
    for (const listener of this.#everyChange) listener(id);
    if (!this.#listeners.has(id) || this.#pending.has(id)) return;
    const since = performance.now() - (this.#lastSent.get(id) ?? -Infinity);
    const wait = Math.max(this.#coalesceMs, this.#minIntervalMs - since);
    this.#pending.set(
      id,
      setTimeout(() => {
        this.#pending.delete(id);
        this.#lastSent.set(id, performance.now());
        for (const listener of this.#listeners.get(id) ?? []) listener();
      }, wait),
    );
  }

  #subscribe(id: string, listener: Listener): () => void {
    let set = this.#listeners.get(id);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(id, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) {
        this.#listeners.delete(id);
        const timer = this.#pending.get(id);
        if (timer !== undefined) clearTimeout(timer);
        this.#pending.delete(id);
        this.#lastSent.delete(id);
      }
    };
  }

  /**
   * Opens an event stream for one model: an `update` event with the
   * current state at once, then one after each (coalesced) change.
   *
   * @param id Model id.
   * @param state Reads the model's current state.
   * @param signal Ends the stream (e.g. the server shutting down).
   * @returns The `text/event-stream` response.
   */
  stream(
    id: string,
    state: () => Promise<LiveState | undefined>,
    signal?: AbortSignal | undefined,
  ): Response {
    const encoder = new TextEncoder();
    let stop = (): void => {};
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        let closed = false;
        let busy = false;
        let again = false;
        const send = (text: string): void => {
          if (closed) return;
          try {
            controller.enqueue(encoder.encode(text));
          } catch {
            stop();
          }
        };
        const update = async (): Promise<void> => {
          if (busy) {
            again = true;
            return;
          }
          busy = true;
          try {
            do {
              again = false;
              const current = await state().catch(() => undefined);
              if (current === undefined) {
                send("event: gone\ndata: {}\n\n");
                stop();
                return;
              }
              send(`event: update\ndata: ${JSON.stringify(current)}\n\n`);
            } while (again && !closed);
          } finally {
            busy = false;
          }
        };
        const unsubscribe = this.#subscribe(id, () => void update());
        const keepAlive = setInterval(
          () => send(": keep-alive\n\n"),
          this.#keepAliveMs,
        );
        stop = (): void => {
          if (closed) return;
          closed = true;
          unsubscribe();
          clearInterval(keepAlive);
          signal?.removeEventListener("abort", stop);
          try {
            controller.close();
          } catch {
            // Already closed or cancelled.
          }
        };
        if (signal?.aborted) {
          stop();
          return;
        }
        signal?.addEventListener("abort", stop, { once: true });
        send("retry: 2000\n\n");
        void update();
      },
      cancel: () => stop(),
    });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-store",
        "x-content-type-options": "nosniff",
      },
    });
  }
}
