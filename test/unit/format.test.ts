/**
 * The CLI's human output of what agents said (control/format.ts and its print sites in move.ts,
 * drain.ts): a peer's names, labels, addresses and messages reach the operator's terminal with every
 * control character escaped (no escape sequence, no extra line); --json output is the same JSON value
 * with the controls JSON.stringify leaves raw (C1, bidi) escaped too.
 */
import { expect } from 'chai'
import { formatPeers, formatStatus, jsonText, printable } from '../../control/format.js'
import { MoveRenderer } from '../../control/move.js'
import { renderDrain } from '../../control/drain.js'
import type { AgentStatus, PeerRow } from '../../protocol/messages.js'

const ID = '12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA'
/** Clears the screen, sets the terminal title, writes the clipboard (OSC 52), then fakes a line of ours. */
const EVIL = '\x1b[2J\x1b]0;owned\x07\x1b]52;c;Y3VybCBldmlsfHNo\x07\nSECURE: all members alive\r\u009b31m\u202eevil'

/** No character a terminal acts on: only printable text and the newlines the layout itself puts. */
function expectInert (text: string): void {
  expect(text).to.not.match(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/)
  expect(text).to.not.match(/^SECURE/m)
}

describe('CLI output of text from the network (printable)', () => {
  it('escapes control characters, line breaks and bidi overrides, and keeps everything else', () => {
    expect(printable('web\x1b[2J')).to.equal('web\\x1b[2J')
    expect(printable('a\nb\rc\td\x00e\x7f')).to.equal('a\\nb\\rc\\td\\x00e\\x7f')
    expect(printable('\u009b\u2028\u202e')).to.equal('\\x9b\\u2028\\u202e')
    expect(printable('café → aws-1 ✓ 日本 \\x1b')).to.equal('café → aws-1 ✓ 日本 \\x1b')
  })

  it('goto peers: names, addresses, versions and labels of peers', () => {
    const row: PeerRow = {
      name: `aws-1${EVIL}`, peerId: ID, self: false, state: 'alive', role: 'agent', addrs: [`/dns4/x${EVIL}/tcp/1`],
      labels: { [`k${EVIL}`]: EVIL }, agentVersion: EVIL, dockerVersion: EVIL, containers: 1, lastSeen: null, rttMs: 1
    }
    const text = formatPeers([row])
    expectInert(text)
    expect(text.split('\n')).to.have.length(3)
    expect(text).to.contain('aws-1\\x1b[2J\\x1b]0;owned\\x07')
  })

  it('goto status: the agent\'s name, labels, engine error, containers, failover rows and live-move line', () => {
    const s: AgentStatus = {
      name: EVIL, peerId: ID, version: EVIL, uptimeS: 1, labels: { a: EVIL }, docker: { error: EVIL },
      containers: [{ name: EVIL, id: EVIL, image: EVIL, state: EVIL, status: EVIL }],
      peers: { alive: 1, suspect: 0, dead: 0 },
      failover: {
        safe: false, reason: EVIL, members: 1, reachable: 1, majority: 1, replicas: 1, snapshotIntervalS: 1,
        containers: [{ name: EVIL, protected: true, owner: EVIL, epoch: 1, fenced: false, lastSnapshotAt: null, snapshotAgeS: null, snapshotSeq: null, holders: [EVIL], freezeMs: null, snapshotBytes: null }],
        held: [{ name: EVIL, owner: EVIL, epoch: 1, seq: 1, takenAt: '', ageS: 1 }]
      },
      live: { ok: false, criu: EVIL, missing: [EVIL, EVIL] }
    }
    expectInert(formatStatus(s))
    expect(formatStatus(s)).to.contain('live moves: no: ')
  })

  it('goto move and goto drain: names and error messages in events', () => {
    let out = ''
    const to = (s: string): void => { out += s }
    const r = new MoveRenderer(to, to, false, false)
    r.render({ event: 'plan', plan: { moveId: EVIL, container: EVIL, from: EVIL, to: EVIL, image: `sha256:${'a'.repeat(64)}`, layersTotal: 1, layersPresent: 0, layersToSend: 1, bytesToSend: 1, volumes: [EVIL] } as never })
    r.render({ event: 'step', moveId: 'm', step: EVIL as never })
    r.render({ event: 'progress', moveId: 'm', step: EVIL as never, bytesSent: 1, bytesTotal: 2 })
    r.render({ event: 'done', moveId: 'm', container: EVIL, from: EVIL, to: EVIL, bytesSent: 1, layersSent: 1, layersSkipped: 0, downtimeMs: 1 })
    r.render({ event: 'failed', moveId: EVIL, container: EVIL, error: { name: EVIL, message: EVIL }, rollback: 'done' })
    renderDrain({ event: 'drain-plan', plan: { host: 'aws-1', assignments: [{ container: EVIL, to: EVIL }], left: [{ container: EVIL, state: EVIL }] } }, to, to)
    renderDrain({ event: 'drain-move', container: EVIL, to: EVIL, index: 1, of: 1 }, to, to)
    renderDrain({ event: 'drained', host: 'aws-1', dryRun: false, moved: [], failed: [{ container: EVIL, to: EVIL, error: EVIL }], left: [] }, to, to)
    expectInert(out)
    expect(out.split('\n').filter(l => l !== '')).to.have.length(10)
  })

  it('--json output: the same JSON value, with no raw control character either (JSON.stringify leaves C1 and bidi raw)', () => {
    expect(JSON.stringify({ name: EVIL })).to.match(/[\u009b\u202e]/)
    for (const indent of [undefined, 2]) {
      const text = jsonText({ name: EVIL, list: [EVIL] }, indent)
      expectInert(text.replace(/\n/g, ' '))
      expect(JSON.parse(text)).to.deep.equal({ name: EVIL, list: [EVIL] })
    }
    expect(jsonText({ a: 'plain' }, 2)).to.equal(JSON.stringify({ a: 'plain' }, null, 2))
  })
})
