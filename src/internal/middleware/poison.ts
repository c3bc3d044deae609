import * as Handler from "../../Handler.js"

/** `Handler.poison`: the failures `predicate` accepts are dead-lettered at once. */
export const poison = <E>(predicate: (error: E) => boolean) =>
  Handler.onError<E>((error) => predicate(error) ? Handler.Disposition.deadLetter : undefined)
