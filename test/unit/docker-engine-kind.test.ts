import { expect } from 'chai'
import { describeEngine, imageStoreOf, productOf } from '../../agent/docker/engine-kind.js'

describe('engine kind', () => {
  it('tells the containerd image store from a graph driver by /info DriverStatus', () => {
    expect(imageStoreOf([['driver-type', 'io.containerd.snapshotter.v1']])).to.equal('containerd')
    expect(imageStoreOf([['Backing Filesystem', 'extfs'], ['Supports d_type', 'true']])).to.equal('graphdriver')
    expect(imageStoreOf(null)).to.equal('graphdriver')
    // Podman's /info (4.3.1): Driver overlay, a graph-driver-like DriverStatus, and a BuildahVersion no Docker Engine sends.
    expect(imageStoreOf([['Backing Filesystem', 'extfs'], ['Native Overlay Diff', 'true']], '1.28.0')).to.equal('containers-storage')
  })

  it('tells Podman by its /version components', () => {
    expect(productOf([{ Name: 'Podman Engine', Version: '4.3.1' }])).to.equal('podman')
    expect(productOf([{ Name: 'Engine', Version: '28.5.2' }, { Name: 'containerd' }])).to.equal('docker')
    expect(productOf(undefined)).to.equal('docker')
  })

  it('describes an engine in one bounded line', () => {
    expect(describeEngine({ product: 'docker', version: '28.5.2+dfsg4' }, { imageStore: 'containerd', storageDriver: 'overlayfs' })).to.equal('docker 28.5.2+dfsg4 containerd-store')
    expect(describeEngine({ product: 'docker', version: '20.10.24+dfsg1' }, { imageStore: 'graphdriver', storageDriver: 'overlay2' })).to.equal('docker 20.10.24+dfsg1 overlay2')
    expect(describeEngine({ product: 'podman', version: '4.3.1' }, { imageStore: 'graphdriver', storageDriver: 'overlay' })).to.equal('podman 4.3.1')
    expect(describeEngine({ product: 'docker', version: 'x'.repeat(80) }, { imageStore: 'graphdriver', storageDriver: 'overlay2' })).to.have.length(64)
  })
})
