/**
 * fromWireError: a peer's error is rebuilt as our class of that name, and only ours: a name that is
 * a property of every object ('constructor', '__proto__', ...) gives a plain GotoError carrying it.
 */
import { expect } from 'chai'
import { GotoError, MoveInProgressError, fromWireError, toWireError } from '../../protocol/errors.js'

describe('errors that crossed the wire (fromWireError)', () => {
  it('rebuilds our own classes by name', () => {
    const err = fromWireError(toWireError(new MoveInProgressError('busy')))
    expect(err).to.be.instanceOf(MoveInProgressError)
    expect(err.name).to.equal('MoveInProgressError')
    expect(err.message).to.equal('busy')
  })

  it('looks names up among our classes only, never on an object\'s prototype', () => {
    for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf', 'isPrototypeOf']) {
      let err: unknown
      expect(() => { err = fromWireError({ name, message: 'x' }) }, name).not.to.throw()
      expect(err, name).to.be.instanceOf(GotoError)
      expect(Object.getPrototypeOf(err), name).to.equal(GotoError.prototype)
      expect((err as GotoError).name, name).to.equal(name)
      expect((err as GotoError).message, name).to.equal('x')
    }
  })

  it('keeps an unknown name, and a name that is no string becomes GotoError', () => {
    expect(fromWireError({ name: 'SomethingElseError', message: 'm' }).name).to.equal('SomethingElseError')
    expect(fromWireError({ name: 42 as unknown as string, message: 'm' }).name).to.equal('GotoError')
  })
})
