/** @module The product's version: one constant, read by the supervisor's status, the admin API and `bin/agate --version`. */
export const VERSION = "0.1.0";
