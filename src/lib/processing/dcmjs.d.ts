// dcmjs ships no types; only the pieces the SR writer uses are declared.
declare module 'dcmjs' {
  interface DicomDictInstance {
    dict: Record<string, unknown>
    write(options?: Record<string, unknown>): ArrayBuffer
  }

  const dcmjs: {
    data: {
      DicomDict: new (meta: Record<string, unknown>) => DicomDictInstance
      DicomMetaDictionary: {
        denaturalizeDataset(dataset: Record<string, unknown>): Record<string, unknown>
        naturalizeDataset(dataset: Record<string, unknown>): Record<string, unknown>
      }
      DicomMessage: {
        readFile(buffer: ArrayBuffer, options?: Record<string, unknown>): {meta: Record<string, unknown>; dict: Record<string, unknown>}
      }
    }
  }
  export default dcmjs
}
