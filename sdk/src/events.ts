// A small typed event emitter (no dependency on Node's EventEmitter or the
// DOM's EventTarget, so the same code runs in both).

export class Emitter<Events extends object> {
  private listeners = new Map<keyof Events, Set<(ev: never) => void>>();

  /** Calls `fn` for every `type` event; returns a function that unsubscribes. */
  on<K extends keyof Events>(type: K, fn: (ev: Events[K]) => void): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(fn as (ev: never) => void);
    return () => this.off(type, fn);
  }

  off<K extends keyof Events>(type: K, fn: (ev: Events[K]) => void): void {
    this.listeners.get(type)?.delete(fn as (ev: never) => void);
  }

  /** Resolves with the next `type` event that satisfies `pred`. */
  once<K extends keyof Events>(type: K, pred: (ev: Events[K]) => boolean = () => true): Promise<Events[K]> {
    return new Promise((resolve) => {
      const off = this.on(type, (ev) => {
        if (!pred(ev)) return;
        off();
        resolve(ev);
      });
    });
  }

  protected emit<K extends keyof Events>(type: K, ev: Events[K]): void {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        (fn as (ev: Events[K]) => void)(ev);
      } catch (e) {
        // A throwing listener must not stop the session's processing; the
        // error still surfaces as an uncaught exception.
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
}
