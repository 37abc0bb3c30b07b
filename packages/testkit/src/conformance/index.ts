export * from './scenarios';
export * from './suite';
export * from './guest-helpers';
