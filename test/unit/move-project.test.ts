/**
 * A compose project's members and their start order (agent/move/project.ts), from the labels compose
 * v2 gives its containers: dependencies first, replicas of a service together, services outside the
 * project ignored, a circle refused by name.
 */
import { expect } from 'chai'
import { projectMembers } from '../../agent/move/project.js'
import type { ContainerRow } from '../../protocol/messages.js'

function row (project: string, service: string, n = 1, dependsOn = ''): ContainerRow {
  return {
    name: `${project}-${service}-${n}`, id: `${service}${n}`.padEnd(64, '0'), image: 'img', state: 'running', status: 'Up',
    labels: { 'com.docker.compose.project': project, 'com.docker.compose.service': service, 'com.docker.compose.container-number': String(n), 'com.docker.compose.depends_on': dependsOn }
  }
}

describe('compose project members (agent/move/project.ts)', () => {
  it('orders web → app → db as db, app, web, replicas together, and ignores other projects and outside services', () => {
    const rows = [row('shop', 'web', 1, 'app:service_started:false'), row('shop', 'app', 2, 'db:service_started:false,cache:service_started:false'), row('shop', 'db'), row('shop', 'app', 1, 'db:service_started:false'), row('other', 'db')]
    expect(projectMembers(rows, 'shop').map(m => m.name)).to.deep.equal(['shop-db-1', 'shop-app-1', 'shop-app-2', 'shop-web-1'])
    expect(projectMembers(rows, 'shop').find(m => m.service === 'app')?.dependsOn).to.deep.equal(['db'])
  })

  it('refuses an unknown project and a circle of dependencies, by name', () => {
    expect(() => projectMembers([row('shop', 'db')], 'none')).to.throw().with.property('name', 'UnknownProjectError')
    const circle = [row('shop', 'a', 1, 'b:service_started:false'), row('shop', 'b', 1, 'a:service_started:false')]
    expect(() => projectMembers(circle, 'shop')).to.throw(/a → b → a/).with.property('name', 'ProjectCycleError')
  })
})
