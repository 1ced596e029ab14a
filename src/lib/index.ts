export * from './errors.js'
export * from './config/schema.js'
export {loadConfig, selectBackends} from './config/load.js'
