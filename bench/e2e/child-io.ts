/**
 * @module The child side of bench/e2e/children.ts's protocol, shared by the benchmarks' fixture and client
 * processes: one JSON object per stdout line out, one command per stdin line in. No imports.
 */

/** One JSON object per stdout line. */
export const emitLine = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify(o) + "\n");

/** stdin, one line at a time (trimmed, empty ones included); ends when stdin closes (the parent is gone). */
export async function* stdinLines(): AsyncGenerator<string> {
  const dec = new TextDecoder();
  let rest = "";
  for await (const chunk of Bun.stdin.stream()) {
    rest += dec.decode(chunk, { stream: true });
    let k;
    while ((k = rest.indexOf("\n")) >= 0) {
      const line = rest.slice(0, k).trim();
      rest = rest.slice(k + 1);
      yield line;
    }
  }
}
