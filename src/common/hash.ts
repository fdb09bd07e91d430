// Internal: the sha256 of a file, read in 1 MiB chunks (flat memory).

import { createHash } from "node:crypto";
import { open } from "node:fs/promises";

/** Returns the lowercase hex sha256 of a file, reading it in 1 MiB chunks. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  const file = await open(path);
  try {
    const buffer = new Uint8Array(1 << 20);
    for (;;) {
      const { bytesRead } = await file.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
    }
  } finally {
    await file.close();
  }
  return hash.digest("hex");
}
