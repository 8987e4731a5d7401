export declare class Emitter<Events extends object> {
    private listeners;
    /** Calls `fn` for every `type` event; returns a function that unsubscribes. */
    on<K extends keyof Events>(type: K, fn: (ev: Events[K]) => void): () => void;
    off<K extends keyof Events>(type: K, fn: (ev: Events[K]) => void): void;
    /** Resolves with the next `type` event that satisfies `pred`. */
    once<K extends keyof Events>(type: K, pred?: (ev: Events[K]) => boolean): Promise<Events[K]>;
    protected emit<K extends keyof Events>(type: K, ev: Events[K]): void;
}
