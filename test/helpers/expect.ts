import {DdrError} from '../../src/lib/errors.js'

/** Awaits a promise that must reject with a DdrError, and returns that error. */
export async function expectDdrError(promise: Promise<unknown>): Promise<DdrError> {
  try {
    await promise
  } catch (error) {
    expect(error).toBeInstanceOf(DdrError)
    return error as DdrError
  }

  throw new Error('expected a DdrError')
}
