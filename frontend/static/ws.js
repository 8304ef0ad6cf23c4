// A WebSocket that reconnects by itself, with exponential backoff and jitter.
//
//   const sock = new LiveSocket("/ws/projects/1/", {onMessage, onOpen, onState});
//
// onOpen(reconnected) fires on every open; reconnected is true after a drop, when the caller
// should resync whatever it may have missed.  onState(state) reports "connecting" | "open" |
// "closed" for a status light.  Close codes 4401/4404 (not logged in / not a member) stop retrying.

const FATAL = new Set([4401, 4403, 4404]);

export class LiveSocket {
  constructor(path, {onMessage, onOpen, onState} = {}, {minDelay = 500, maxDelay = 30000} = {}) {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    this.url = `${proto}//${location.host}${path}`;
    this.onMessage = onMessage || (() => {});
    this.onOpen = onOpen || (() => {});
    this.onState = onState || (() => {});
    this.minDelay = minDelay;
    this.maxDelay = maxDelay;
    this.attempt = 0;
    this.opened = false;
    this.stopped = false;
    this.connect();
  }

  connect() {
    this.onState("connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.addEventListener("open", () => {
      const reconnected = this.opened;
      this.opened = true;
      this.attempt = 0;
      this.onState("open");
      this.onOpen(reconnected);
    });
    ws.addEventListener("message", (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      this.onMessage(msg, Date.now());
    });
    ws.addEventListener("close", (ev) => {
      this.onState("closed");
      if (this.stopped || FATAL.has(ev.code)) return;
      const base = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt);
      this.attempt += 1;
      const delay = base / 2 + Math.random() * base / 2;
      setTimeout(() => this.connect(), delay);
    });
  }

  close() {
    this.stopped = true;
    if (this.ws) this.ws.close();
  }
}
