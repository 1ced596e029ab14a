import {ContextPlan, MAX_CONTEXTS_PER_ASSOCIATION} from '../../../src/lib/backends/context-plan.js'

const CT = '1.2.840.10008.5.1.4.1.1.2'
const MR = '1.2.840.10008.5.1.4.1.1.4'
const EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1'
const JPEG_BASELINE = '1.2.840.10008.1.2.4.50'

describe('ContextPlan', () => {
  it('proposes each (SOP class, transfer syntax) pair once, in the order first seen', () => {
    const plan = new ContextPlan()
    expect([plan.add({abstractSyntax: CT, transferSyntax: EXPLICIT_VR_LITTLE_ENDIAN}), plan.add({abstractSyntax: MR, transferSyntax: JPEG_BASELINE}), plan.add({abstractSyntax: CT, transferSyntax: EXPLICIT_VR_LITTLE_ENDIAN})]).toEqual([0, 0, 0])
    expect(plan.allGroups()).toEqual([
      [
        {abstractSyntax: CT, transferSyntax: EXPLICIT_VR_LITTLE_ENDIAN},
        {abstractSyntax: MR, transferSyntax: JPEG_BASELINE},
      ],
    ])
  })

  it('splits more pairs than one association can propose into groups, none left out', () => {
    const plan = new ContextPlan()
    for (let index = 0; index < 300; index++) plan.add({abstractSyntax: `1.2.840.10008.5.1.4.1.1.${index}`, transferSyntax: EXPLICIT_VR_LITTLE_ENDIAN})
    expect(plan.allGroups().map((group) => group.length)).toEqual([MAX_CONTEXTS_PER_ASSOCIATION, MAX_CONTEXTS_PER_ASSOCIATION, 300 - 2 * MAX_CONTEXTS_PER_ASSOCIATION])
    expect(plan.groupOf({abstractSyntax: '1.2.840.10008.5.1.4.1.1.299', transferSyntax: EXPLICIT_VR_LITTLE_ENDIAN})).toBe(2)
    expect(plan.size).toBe(300)
  })
})
