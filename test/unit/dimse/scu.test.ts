import {DimseServer, QueryModel} from '../../../src/lib/dimse/scp.js'
import {ScuAssociation} from '../../../src/lib/dimse/scu.js'

const EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1'

describe('ScuAssociation as C-GET SCU', () => {
  it('proposes SCP/SCU role selection and learns which storage classes it may receive', async () => {
    const CT = '1.2.840.10008.5.1.4.1.1.2'
    const MR = '1.2.840.10008.5.1.4.1.1.4'
    const server = new DimseServer({
      aeTitle: 'DDR',
      transferSyntaxes: [EXPLICIT_VR_LITTLE_ENDIAN],
      beginStore: () => {
        throw new Error('no store expected')
      },
      query: {models: [QueryModel.studyRootGet], handle: async () => ({status: 0})},
    })
    const port = await server.listen(0, '127.0.0.1')
    try {
      const association = await ScuAssociation.connect({
        host: '127.0.0.1',
        port,
        callingAeTitle: 'GETTER',
        calledAeTitle: 'DDR',
        contexts: [
          {abstractSyntax: QueryModel.studyRootGet, transferSyntax: EXPLICIT_VR_LITTLE_ENDIAN},
          {abstractSyntax: CT, transferSyntax: EXPLICIT_VR_LITTLE_ENDIAN},
        ],
        roleSelections: [{sopClassUid: CT, scuRole: false, scpRole: true}],
      })
      expect(association.grantedScpRole(CT)).toBe(true)
      expect(association.grantedScpRole(MR)).toBe(false)
      expect(association.supports(CT, EXPLICIT_VR_LITTLE_ENDIAN)).toBe(true)
      await association.release()
    } finally {
      await server.close(100)
    }
  })
})
