// The live event stream, read with fetch() so the request can carry the Authorization header
// (EventSource cannot send headers). Server-Sent Events are parsed from the body's reader; on a
// dropped connection it resumes after the last ``id:`` it saw, so no event is missed or repeated.

const MIN_RETRY_MS = 1000;
const MAX_RETRY_MS = 15000;

/** One event in the shape both ``GET /v1/events`` items and stream CloudEvents reduce to. */
export function normalize(event) {
  const data = event.data || {};
  return {
    seq: event.seq ?? data.cursor,
    type: event.type,
    subject: event.subject,
    time: event.time,
    instanceSeq: event.instance_seq ?? data.sequence ?? null,
    instance: data.instance || null,
    data,
  };
}

export class EventStream {
  /**
   * ``onEvent(event)`` for each event (normalized), ``onState("live" | "reconnecting" |
   * "stopped")`` as the connection changes, ``onGone()`` when the cursor is older than the
   * retained events (410): the caller re-reads current state and starts a new stream.
   */
  constructor(api, { onEvent, onState = () => {}, onGone = () => {} }) {
    this.api = api;
    this.onEvent = onEvent;
    this.onState = onState;
    this.onGone = onGone;
    this.controller = null;
    this.after = 0;
    this.retryMs = 2000;
  }

  start(after) {
    this.stop();
    this.after = after;
    this.controller = new AbortController();
    this.run(this.controller.signal);
  }

  stop() {
    if (this.controller) this.controller.abort();
    this.controller = null;
  }

  async run(signal) {
    let failures = 0;
    while (!signal.aborted) {
      try {
        const response = await this.api.raw("v1/events/stream", {
          params: { after: this.after },
          headers: { Accept: "text/event-stream" },
          signal,
        });
        if (response.status === 410) {
          this.onState("stopped");
          this.onGone();
          return;
        }
        if (response.status === 401 || response.status === 403) {
          this.onState("stopped");
          return;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        failures = 0;
        this.onState("live");
        await this.read(response.body, signal);
      } catch (error) {
        if (signal.aborted) return;
        failures += 1;
      }
      if (signal.aborted) return;
      this.onState("reconnecting");
      // The server's ``retry:`` after a clean end; doubling (to a cap) while it keeps failing.
      const base = Math.max(MIN_RETRY_MS, this.retryMs);
      await sleep(Math.min(MAX_RETRY_MS, base * 2 ** Math.min(failures, 4)), signal);
    }
  }

  async read(body, signal) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || signal.aborted) return;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          this.dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  /** One SSE frame: ``id:``, ``event:``, ``data:`` (joined by newlines), ``retry:``. */
  dispatch(frame) {
    let id = null;
    const data = [];
    for (const line of frame.split("\n")) {
      if (!line || line.startsWith(":")) continue; // a comment: the keep-alive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "id") id = value;
      else if (field === "data") data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) this.retryMs = Number(value);
    }
    if (id !== null && /^\d+$/.test(id)) this.after = Number(id);
    if (!data.length) return;
    let event;
    try {
      event = JSON.parse(data.join("\n"));
    } catch {
      return; // not ours to interpret
    }
    try {
      this.onEvent(normalize(event));
    } catch (error) {
      console.error("applying an event failed", error); // keep the stream going
    }
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}
