import { randomFillSync } from "node:crypto"

const hex: Array<string> = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"))
const pool = new Uint8Array(16 * 256)
let poolOffset = pool.length

/** UUID v7 (RFC 9562): 48-bit unix millis, version 7, variant 10, 74 random bits. */
export const uuidv7 = (nowMillis: number): string => {
  if (poolOffset + 16 > pool.length) {
    randomFillSync(pool)
    poolOffset = 0
  }
  const b = pool.subarray(poolOffset, poolOffset + 16)
  poolOffset += 16
  let ms = Math.max(0, Math.floor(nowMillis))
  for (let i = 5; i >= 0; i--) {
    b[i] = ms % 256
    ms = Math.floor(ms / 256)
  }
  b[6] = (b[6]! & 0x0f) | 0x70
  b[8] = (b[8]! & 0x3f) | 0x80
  return hex[b[0]!]! + hex[b[1]!]! + hex[b[2]!]! + hex[b[3]!]! + "-" + hex[b[4]!]! + hex[b[5]!]! + "-" +
    hex[b[6]!]! + hex[b[7]!]! + "-" + hex[b[8]!]! + hex[b[9]!]! + "-" + hex[b[10]!]! + hex[b[11]!]! +
    hex[b[12]!]! + hex[b[13]!]! + hex[b[14]!]! + hex[b[15]!]!
}
