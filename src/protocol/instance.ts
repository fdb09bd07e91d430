/**
 * The HUB instance header: a HUB names itself in every API reply with a
 * stable id kept in its data directory, so a client can tell the same HUB
 * reached on another address.
 *
 * @module
 */

/** The reply header that carries the HUB's instance id. */
export const INSTANCE_HEADER = "x-hub-instance";
