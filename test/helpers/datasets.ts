// Synthetic studies live in src so benchmarks can use them too.
export {type SyntheticInstance, writeSyntheticStudies} from '../../src/lib/dicom/synthetic.js'
