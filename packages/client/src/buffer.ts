/** A FIFO with O(1) removal from the front, for the events waiting to be sent. */
export class EventBuffer<T> {
  #items: T[] = [];
  #head = 0;

  get length(): number {
    return this.#items.length - this.#head;
  }

  push(item: T): void {
    this.#items.push(item);
  }

  shift(): T | undefined {
    if (this.length === 0) return undefined;
    const item = this.#items[this.#head++];
    this.#compact();
    return item;
  }

  /** Removes and returns up to `count` items from the front. */
  take(count: number): T[] {
    const taken = this.#items.slice(this.#head, this.#head + count);
    this.#head += taken.length;
    this.#compact();
    return taken;
  }

  /** Drops the consumed front once it is most of the array, so memory follows the live length. */
  #compact(): void {
    if (this.#head === this.#items.length) {
      this.#items = [];
      this.#head = 0;
    } else if (this.#head > 1_024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
  }
}
