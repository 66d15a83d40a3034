import { expect } from 'chai'
import { parseRate } from '../../control/rate-arg.js'
import { ConfigError } from '../../protocol/errors.js'
import { eta } from '../../control/move.js'

describe('goto move --max-rate RATE', () => {
  it('reads bit units (any case, as tc writes them) and byte units (SI and binary), with or without /s', () => {
    expect(parseRate('50Mbit')).to.equal(6_250_000)
    expect(parseRate('100mbit')).to.equal(12_500_000)
    expect(parseRate('1Gbps')).to.equal(125_000_000)
    expect(parseRate('10MiB/s')).to.equal(10 * 2 ** 20)
    expect(parseRate('2.5MB/s')).to.equal(2_500_000)
    expect(parseRate('512KiB')).to.equal(512 * 1024)
  })

  it('refuses a bare number, an unknown unit, an ambiguous Mb, a negative or tiny rate, naming the option', () => {
    for (const bad of ['50', 'fast', '10 parsecs', '5Mb', '5mb/s', '-5Mbit', '1bit', '', '1e3Mbit']) {
      expect(() => parseRate(bad), bad).to.throw(ConfigError, /--max-rate/)
    }
  })

  it('the progress bar\'s ETA is given at the rate seen and at the cap', () => {
    expect(eta(100, 10)).to.equal('ETA 10s')
    expect(eta(100, 5, 10)).to.equal('ETA 20s (10s at the cap)')
    expect(eta(0, 5, 10)).to.equal('')
  })
})
